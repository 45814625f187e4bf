"""Training checkpoints: the folder `Trainer.checkpoint` writes and `Trainer.resume` reads back.

    <path>/
      sae_0/, sae_1/, ...          each SAE as `Sae.save` writes it, unfolded (normalised input units)
      trainer_state.safetensors    RNG states: rng_cpu, rng_trainer (the trainer's generator), rng_cuda (with CUDA);
                                   per SAE i: i.tokens_since_fired, i.window_fires, i.opt.j.{exp_avg,exp_avg_sq,step}
                                   (Adam's state of the SAE's j-th parameter)
      trainer_state.json           step, data position, scales, input key, TrainConfig, history, n_saes and each
                                   SAE's window_tokens; written last, so its presence marks a complete checkpoint

The step is the whole position of the run: it fixes the schedule, and the cache's batch order is a
pure function of the seed and the batch index (streams are replayed by skipping `step` batches).

Crash-safe: a checkpoint is written into `<path>.tmp`, then swapped in by two renames (the previous
checkpoint becomes `<path>.old` until the new one is in place, then it is deleted). A kill between
the renames leaves only `<path>.old`, which `find_checkpoint` (and so `resume_trainer`) falls back to.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..config import TrainConfig, dump_json
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
    tmp.mkdir(parents=True)
    tensors: dict[str, Tensor] = {"rng_cpu": torch.get_rng_state(), "rng_trainer": trainer.generator.get_state()}
    if torch.cuda.is_available():
        tensors["rng_cuda"] = torch.cuda.get_rng_state()
    for i, slot in enumerate(trainer.slots):
        slot.sae.save(tmp / f"sae_{i}")
        tensors[f"{i}.tokens_since_fired"] = slot.tokens_since_fired.cpu()
        tensors[f"{i}.window_fires"] = slot.window_fires.cpu()
        for j, p in enumerate(slot.sae.parameters()):
            st = slot.opt.state.get(p, {})
            for key in _ADAM_KEYS:
                if key in st:
                    tensors[f"{i}.opt.{j}.{key}"] = torch.as_tensor(st[key]).detach().cpu().contiguous()
    save_file(tensors, str(tmp / STATE_TENSORS))
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
    dump_json(state, tmp / STATE_JSON)  # written last: its presence marks a complete checkpoint
    _swap_in(tmp, path)
    return path


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` by the finished `tmp`, keeping the previous checkpoint as `path.old` until `tmp` is in place."""
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


def find_checkpoint(path: str | Path) -> Path:
    """The complete checkpoint at `path`, or at `path.old` when a kill came between the two renames of a write."""
    path = Path(path)
    if (path / STATE_JSON).exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / STATE_JSON).exists():
        return old
    raise TrainingError(f"{path} is not a training checkpoint (no {STATE_JSON}); checkpoints come from Trainer.checkpoint")


def resume_trainer(trainer_cls: type[Trainer], path: str | Path, cfg: TrainConfig | None = None) -> Trainer:
    """Rebuild the trainer that wrote the checkpoint at `path` (see `Trainer.resume`)."""
    path = find_checkpoint(path)
    state = json.loads((path / STATE_JSON).read_text())
    saved_cfg = TrainConfig(**state["cfg"])
    if cfg is not None and cfg != saved_cfg:
        raise TrainingError(f"resume with a different TrainConfig ({cfg} vs saved {saved_cfg}); resume with cfg=None")
    saes = [Sae.load(path / f"sae_{i}") for i in range(state["n_saes"])]
    trainer = trainer_cls(saes, saved_cfg)
    tensors = load_file(str(path / STATE_TENSORS))
    device = trainer.device
    for i, slot in enumerate(trainer.slots):
        slot.tokens_since_fired = tensors[f"{i}.tokens_since_fired"].to(device)
        slot.window_fires = tensors[f"{i}.window_fires"].to(device)
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
