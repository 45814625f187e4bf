"""Training checkpoints: the folder `Trainer.checkpoint` writes and `Trainer.resume` reads back.

    <path>/
      sae_0/, sae_1/, ...          each SAE as `Sae.save` writes it, unfolded (normalised input units)
      trainer_state.safetensors    RNG states: rng_cpu, rng_trainer (the trainer's generator), rng_cuda (with CUDA);
                                   per SAE i: i.tokens_since_fired, i.window_fires, i.dead_latents (AuxK's set
                                   as of the last host read), i.opt.j.{exp_avg,exp_avg_sq,step} (Adam's state of the
                                   SAE's j-th parameter)
      trainer_state.json           step, data position, scales, input key, TrainConfig, history, n_saes and each
                                   SAE's window_tokens; written last, so its presence marks a complete checkpoint

The step is the whole position of the run: it fixes the schedule, and the cache's batch order is a
pure function of the seed and the batch index (streams are replayed by skipping `step` batches).

Crash-safe: a checkpoint is written into `<path>.tmp` and fsync-ed (every file and folder), then swapped
in by two durable renames (the previous checkpoint becomes `<path>.old` until the new one is in place,
then it is deleted). A kill between the renames leaves only `<path>.old`, which `find_checkpoint` (and so
`resume_trainer`) falls back to. `remove_checkpoint` deletes one atomically (rename, then delete), so a
kill while a finished run cleans up leaves the checkpoint either whole or gone.
Crash points (`durable.crash_point`, for tests/test_crash.py): checkpoint.before_state (the SAEs and
tensors written into the temporary folder, the state json not), checkpoint.before_first_rename,
checkpoint.after_first_rename, checkpoint.after_second_rename.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .. import durable
from ..config import ConfigError, TrainConfig
from ..durable import crash_point
from ..errors import TrainingError
from ..saes import Sae

if TYPE_CHECKING:
    from .trainer import Trainer

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def write_checkpoint(trainer: Trainer, path: str | Path) -> Path:
    """Write everything `resume_trainer` needs into `path` (crash-safe; one process: the caller picks rank 0)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for p in (path, path.with_name(path.name + ".old"), tmp):
        durable.remove_leftovers(p)  # folders that killed deletions had renamed away
    tmp.mkdir(parents=True)
    tensors: dict[str, Tensor] = {"rng_cpu": torch.get_rng_state(), "rng_trainer": trainer.generator.get_state()}
    if torch.cuda.is_available():
        tensors["rng_cuda"] = torch.cuda.get_rng_state()
    for i, slot in enumerate(trainer.slots):
        slot.sae.save(tmp / f"sae_{i}")
        tensors[f"{i}.tokens_since_fired"] = slot.tokens_since_fired.cpu()
        tensors[f"{i}.window_fires"] = slot.window_fires.cpu()
        if slot.dead_G is not None:  # AuxK's set as of the last host read (TrainConfig.sync_every)
            tensors[f"{i}.dead_latents"] = slot.dead_G.cpu()
        for j, p in enumerate(slot.sae.parameters()):
            st = slot.opt.state.get(p, {})
            for key in _ADAM_KEYS:
                if key in st:
                    tensors[f"{i}.opt.{j}.{key}"] = torch.as_tensor(st[key]).detach().cpu().contiguous()
    durable.save_tensors(tensors, tmp / STATE_TENSORS)
    state = {
        "step": trainer.step,
        "data_position": {"batches": trainer.step, "tokens": trainer.step * trainer.cfg.batch_size},
        "scales": trainer.scales,
        "input_key": trainer.input_key,
        "initialised": trainer.initialised,
        "cfg": trainer.cfg.to_dict(),
        "history": trainer.history,
        "n_saes": len(trainer.slots),
        "window_tokens": [s.window_tokens for s in trainer.slots],
    }
    crash_point("checkpoint.before_state")
    durable.write_json(state, tmp / STATE_JSON)  # written last: its presence marks a complete checkpoint
    durable.fsync_tree(tmp)
    _swap_in(tmp, path)
    return path


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` by the finished `tmp`, keeping the previous checkpoint as `path.old` until `tmp` is in place."""
    old = path.with_name(path.name + ".old")
    crash_point("checkpoint.before_first_rename")
    if path.exists():
        if old.exists():
            durable.remove_tree(old)
        durable.replace(path, old)
        crash_point("checkpoint.after_first_rename")
    durable.replace(tmp, path)
    crash_point("checkpoint.after_second_rename")
    if old.exists():
        durable.remove_tree(old)


def remove_checkpoint(path: str | Path) -> None:
    """Delete the checkpoint at `path` and its `.old`/`.tmp` companions, each atomically (rename, then delete)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".old"), path.with_name(path.name + ".tmp")):
        durable.remove_tree(p)
        durable.remove_leftovers(p)


def find_checkpoint(path: str | Path) -> Path:
    """The complete checkpoint at `path`, or at `path.old` when a kill came between the two renames of a write."""
    path = Path(path)
    if (path / STATE_JSON).exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / STATE_JSON).exists():
        return old
    raise TrainingError(f"{path} is not a training checkpoint (no {STATE_JSON}); checkpoints come from Trainer.checkpoint")


def read_state(path: Path) -> dict[str, Any]:
    """trainer_state.json of the checkpoint folder `path`, or a TrainingError naming the file."""
    file = path / STATE_JSON
    try:
        state = json.loads(file.read_text())
        if not isinstance(state, dict) or not {"step", "cfg", "n_saes"} <= set(state):
            raise ValueError("not a trainer state")
        return state
    except (OSError, ValueError) as e:
        raise TrainingError(f"{file} is damaged ({type(e).__name__}: {e}); delete {path} to start the run again") from None


def saved_train_config(path: Path, state: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint was written with; a TrainingError when it names fields this saekit lacks."""
    saved = state["cfg"]
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(saved) - known) if isinstance(saved, dict) else ["(not a mapping)"]
    if unknown:
        raise TrainingError(
            f"{path / STATE_JSON} holds TrainConfig fields this saekit does not know ({unknown}): it was written by "
            f"another saekit version; resume it with that version or start a new run"
        )
    try:
        return TrainConfig(**saved)
    except (TypeError, ConfigError) as e:
        raise TrainingError(f"{path / STATE_JSON} holds an invalid TrainConfig ({e}); start a new run") from None


def describe_differences(saved: Any, wanted: Any) -> str:
    """'field: saved -> wanted, ...' for two dataclasses of one type."""
    diffs = [
        f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(wanted, f.name)!r}"
        for f in fields(saved)
        if getattr(saved, f.name) != getattr(wanted, f.name)
    ]
    return ", ".join(diffs) or "no field differs"


def resume_trainer(trainer_cls: type[Trainer], path: str | Path, cfg: TrainConfig | None = None) -> Trainer:
    """Rebuild the trainer that wrote the checkpoint at `path` (see `Trainer.resume`)."""
    path = find_checkpoint(path)
    state = read_state(path)
    saved_cfg = saved_train_config(path, state)
    if cfg is not None and cfg != saved_cfg:
        raise TrainingError(
            f"{path} was written with another TrainConfig ({describe_differences(saved_cfg, cfg)}); "
            f"resume with cfg=None (the saved config) or start a new run"
        )
    try:
        saes = [Sae.load(path / f"sae_{i}") for i in range(state["n_saes"])]
        tensors = load_file(str(path / STATE_TENSORS))
    except (OSError, SafetensorError, ConfigError, KeyError, TypeError) as e:
        raise TrainingError(f"{path} is damaged ({type(e).__name__}: {e}); delete it to start the run again") from None
    trainer = trainer_cls(saes, saved_cfg)
    device = trainer.device
    for i, slot in enumerate(trainer.slots):
        slot.tokens_since_fired = tensors[f"{i}.tokens_since_fired"].to(device)
        slot.window_fires = tensors[f"{i}.window_fires"].to(device)
        dead = tensors.get(f"{i}.dead_latents")
        slot.dead_G = dead.to(device) if dead is not None else None
        slot.window_tokens = state["window_tokens"][i]
        for j, p in enumerate(slot.sae.parameters()):
            if f"{i}.opt.{j}.exp_avg" in tensors:
                slot.opt.state[p] = {
                    "exp_avg": tensors[f"{i}.opt.{j}.exp_avg"].to(device),
                    "exp_avg_sq": tensors[f"{i}.opt.{j}.exp_avg_sq"].to(device),
                    "step": tensors[f"{i}.opt.{j}.step"].float(),
                }
    torch.set_rng_state(tensors["rng_cpu"])
    trainer.generator.set_state(tensors["rng_trainer"])
    if "rng_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng_cuda"])
    trainer.step = state["step"]
    trainer.scales = state["scales"]
    trainer.input_key = state["input_key"]
    trainer.initialised = state["initialised"]
    trainer.history = state["history"]
    return trainer
