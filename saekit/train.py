"""The training loop: Adam with warmup and linear decay, a token budget, AuxK dead-latent tracking,
input normalisation folded into the saved weights, resumable checkpoints, several SAEs per pass.

    trainer = Trainer(Sae(SaeConfig(d_in=640, n_latents=4096, k=32)), TrainConfig(tokens=300_000))
    trainer.fit(cache)            # an ActivationCache (read many times) or any iterable of [B, D] batches
    trainer.save("runs/l6")       # cfg.json + sae.safetensors, in raw activation units
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from .config import ConfigError, SaeConfig, TrainConfig, dump_json
from .saes import Sae
from .store import ActivationCache

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
SAMPLE_ROWS = 32_768


class TrainingError(ValueError):
    """Training cannot start or continue (bad data, mismatched checkpoint); the message names the fix."""


def pick_device(name: str | None) -> torch.device:
    if name is not None:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_factor(step: int, steps: int, warmup: int, decay_start: float) -> float:
    """Linear warmup to 1, flat, then linear decay to 0 over the last (1 - decay_start) of training."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    start = int(decay_start * steps)
    if step >= start and steps > start:
        return max(0.0, (steps - step) / (steps - start))
    return 1.0


def input_scale(sample_ND: Tensor) -> float:
    """Scale s with E||s x||^2 = d_in, so the same hyper-parameters work at any layer and model."""
    mean_sq = sample_ND.float().pow(2).sum(-1).mean().item()
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise TrainingError("activations have zero or non-finite norm: check the harvested data")
    return math.sqrt(sample_ND.shape[-1] / mean_sq)


class _Slot:
    """One SAE with its optimiser and dead-latent counters."""

    def __init__(self, sae: Sae, lr: float) -> None:
        self.sae = sae
        self.lr = lr
        self.opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
        self.tokens_since_fired = torch.zeros(sae.n_latents, dtype=torch.long, device=sae.device)


class Trainer:
    """Train one or several SAEs on the same stream of activations (one data pass for all)."""

    def __init__(self, saes: Sae | Sequence[Sae], cfg: TrainConfig | None = None) -> None:
        self.cfg = cfg or TrainConfig()
        saes = [saes] if isinstance(saes, Sae) else list(saes)
        if not saes:
            raise TrainingError("Trainer needs at least one SAE")
        d_ins = {s.d_in for s in saes}
        if len(d_ins) != 1:
            raise TrainingError(f"SAEs trained together must read the same width; got d_in {sorted(d_ins)}")
        self.device = pick_device(self.cfg.device)
        for s in saes:
            s.to(self.device)
        self.slots = [_Slot(s, self.cfg.lr_for(s.n_latents)) for s in saes]
        self.step = 0
        self.scale: float | None = None
        self.initialised = False
        self.history: list[dict[str, Any]] = []
        self.callbacks: list[Callable[[dict[str, Any]], None]] = []
        self.folded = False

    @property
    def saes(self) -> list[Sae]:
        return [s.sae for s in self.slots]

    @property
    def sae(self) -> Sae:
        return self.slots[0].sae

    # -- data -----------------------------------------------------------------------------------

    def _batches(self, data: ActivationCache | Iterable[Tensor], hookpoint: str | None) -> Iterator[Tensor]:
        bs = self.cfg.batch_size
        if isinstance(data, ActivationCache):
            if data.n_tokens < bs:
                raise TrainingError(
                    f"the cache holds {data.n_tokens} tokens, fewer than one batch ({bs}): harvest more or lower batch_size"
                )
            return data.batches(hookpoint, bs, seed=self.cfg.seed, epochs=None, start_batch=self.step)
        if isinstance(data, Tensor):
            cache = ActivationCache(["x"], {"x": data.shape[-1]}, tensors={"x": data}, shards=[{"rows": data.shape[0]}])
            return self._batches(cache, "x")
        return iter(data)

    def _sample(self, data, hookpoint, first: Tensor | None) -> Tensor:
        if isinstance(data, ActivationCache):
            key = hookpoint or data._check_hookpoint(None)
            return data.load(key)[:SAMPLE_ROWS].float()
        if isinstance(data, Tensor):
            return data[:SAMPLE_ROWS].float()
        assert first is not None
        return first.float()

    # -- the loop -------------------------------------------------------------------------------

    def fit(
        self,
        data: ActivationCache | Tensor | Iterable[Tensor],
        hookpoint: str | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
    ) -> "Trainer":
        """Train until the token budget is spent (continuing from `self.step` after `resume`)."""
        cfg = self.cfg
        batches = self._batches(data, hookpoint)
        first = None
        if not self.initialised:
            torch.manual_seed(cfg.seed)
            if not isinstance(data, (ActivationCache, Tensor)):
                first = next(batches, None)
                if first is None:
                    raise TrainingError("the activation stream is empty: harvest some activations first")
            sample = self._sample(data, hookpoint, first)
            self._check_finite(sample, "the activation sample")
            if sample.shape[-1] != self.sae.d_in:
                raise TrainingError(
                    f"activations have width {sample.shape[-1]} but the SAE reads d_in={self.sae.d_in}: "
                    f"set SaeConfig.d_in={sample.shape[-1]} or pass the matching hook point"
                )
            self.scale = input_scale(sample) if cfg.normalize else 1.0
            for slot in self.slots:
                slot.sae.init_from_data(sample * self.scale)
            self.initialised = True
        steps = cfg.steps
        bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", disable=not progress)
        t0, tok0 = time.perf_counter(), self.step * cfg.batch_size
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        while self.step < steps:
            if first is not None:
                x, first = first, None
            else:
                x = next(batches, None)
                if x is None:
                    break
            if x.shape[0] != cfg.batch_size:
                x = x[: cfg.batch_size]
            self._check_finite(x, f"batch {self.step}")
            x = x.to(self.device, non_blocking=True).float() * self.scale
            progress_frac = self.step / steps
            factor = lr_factor(self.step, steps, cfg.warmup_steps, cfg.decay_start)
            record = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == steps
            logs = []
            for slot in self.slots:
                sae = slot.sae
                dead_F = slot.tokens_since_fired >= cfg.dead_after
                with autocast:
                    out = sae(x, dead_mask=dead_F, progress=progress_frac)
                slot.opt.zero_grad(set_to_none=True)
                out.loss.backward()
                sae.remove_gradient_parallel_to_decoder_directions()
                for g in slot.opt.param_groups:
                    g["lr"] = slot.lr * factor
                slot.opt.step()
                sae.set_decoder_norm_to_unit_norm()
                slot.tokens_since_fired += x.shape[0]
                slot.tokens_since_fired[out.fired] = 0
                if record:
                    logs.append(self._metrics(slot, out, dead_F))
            self.step += 1
            bar.update()
            if record:
                elapsed = time.perf_counter() - t0
                entry = {
                    "step": self.step,
                    "tokens": self.step * cfg.batch_size,
                    "lr": self.slots[0].lr * factor,
                    "tokens_per_s": (self.step * cfg.batch_size - tok0) / max(elapsed, 1e-9),
                    "saes": logs,
                }
                self.history.append(entry)
                bar.set_postfix(fvu=f"{logs[0]['fvu']:.3f}", l0=f"{logs[0]['l0']:.1f}", dead=f"{logs[0]['dead_fraction']:.2f}")
                for cb in self.callbacks:
                    cb(entry)
            if checkpoint_dir is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.checkpoint(checkpoint_dir)
        bar.close()
        if checkpoint_dir is not None:
            self.checkpoint(checkpoint_dir)
        return self

    @staticmethod
    def _check_finite(x: Tensor, what: str) -> None:
        if not torch.isfinite(x).all():
            raise TrainingError(
                f"{what} contains NaN or inf: the activations are corrupt or overflowed; "
                f"harvest again in float32 (HarvestConfig(dtype='float32'))"
            )

    def _metrics(self, slot: _Slot, out, dead_F: Tensor) -> dict[str, Any]:
        never = slot.tokens_since_fired >= self.cfg.dead_after
        return {
            "loss": out.loss.item(),
            "fvu": out.fvu.item(),
            "aux_loss": out.aux_loss.item(),
            "l0": out.l0.item(),
            "dead_fraction": float(never.float().mean()),
            "n_latents": slot.sae.n_latents,
        }

    # -- results --------------------------------------------------------------------------------

    def fold(self) -> list[Sae]:
        """Fold the input scale into the weights (once): the SAEs then read raw activations."""
        if not self.folded and self.scale is not None and self.scale != 1.0:
            for s in self.saes:
                s.fold_input_scale_(self.scale)
        self.folded = True
        return self.saes

    def save(self, out: str | Path, names: Sequence[str] | None = None) -> list[Path]:
        """Save each SAE (folded to raw units) as cfg.json + sae.safetensors; several go in subfolders."""
        self.fold()
        out = Path(out)
        if len(self.saes) == 1 and names is None:
            return [self.sae.save(out)]
        names = list(names) if names is not None else [f"sae_{i}" for i in range(len(self.saes))]
        return [s.save(out / n) for s, n in zip(self.saes, names)]

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, path: str | Path) -> Path:
        """Everything needed to continue exactly: weights (unfolded), Adam state, step, scale, RNG, counters."""
        if self.folded:
            raise TrainingError("this trainer's SAEs are already folded for saving; checkpoint before fold()/save()")
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {"rng_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng_cuda"] = torch.cuda.get_rng_state()
        for i, slot in enumerate(self.slots):
            slot.sae.save(tmp / f"sae_{i}")
            tensors[f"{i}.tokens_since_fired"] = slot.tokens_since_fired.cpu()
            for j, p in enumerate(slot.sae.parameters()):
                st = slot.opt.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    if key in st:
                        tensors[f"{i}.opt.{j}.{key}"] = torch.as_tensor(st[key]).detach().cpu().contiguous()
        save_file(tensors, str(tmp / STATE_TENSORS))
        dump_json(
            {"step": self.step, "scale": self.scale, "initialised": self.initialised, "cfg": self.cfg.to_dict(),
             "history": self.history, "n_saes": len(self.slots)},
            tmp / STATE_JSON,
        )
        if path.exists():
            import shutil

            shutil.rmtree(path)
        os.replace(tmp, path)
        return path

    @classmethod
    def resume(cls, path: str | Path, cfg: TrainConfig | None = None) -> "Trainer":
        """Rebuild a trainer from `checkpoint(path)`; `fit` on the same data then continues the same run."""
        path = Path(path)
        if not (path / STATE_JSON).exists():
            raise TrainingError(f"{path} is not a training checkpoint (no {STATE_JSON}); checkpoints come from Trainer.checkpoint")
        state = json.loads((path / STATE_JSON).read_text())
        saved_cfg = TrainConfig(**state["cfg"])
        if cfg is not None and cfg != saved_cfg:
            raise TrainingError(f"resume with a different TrainConfig ({cfg} vs saved {saved_cfg}); resume with cfg=None")
        saes = [Sae.load(path / f"sae_{i}") for i in range(state["n_saes"])]
        trainer = cls(saes, saved_cfg)
        tensors = load_file(str(path / STATE_TENSORS))
        for i, slot in enumerate(trainer.slots):
            slot.tokens_since_fired = tensors[f"{i}.tokens_since_fired"].to(trainer.device)
            for j, p in enumerate(slot.sae.parameters()):
                if f"{i}.opt.{j}.exp_avg" in tensors:
                    slot.opt.state[p] = {
                        "exp_avg": tensors[f"{i}.opt.{j}.exp_avg"].to(trainer.device),
                        "exp_avg_sq": tensors[f"{i}.opt.{j}.exp_avg_sq"].to(trainer.device),
                        "step": tensors[f"{i}.opt.{j}.step"].float(),
                    }
        torch.set_rng_state(tensors["rng_cpu"])
        if "rng_cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng_cuda"])
        trainer.step = state["step"]
        trainer.scale = state["scale"]
        trainer.initialised = state["initialised"]
        trainer.history = state["history"]
        return trainer


def train(
    data: ActivationCache | Tensor | Iterable[Tensor],
    sae_cfg: SaeConfig | Sequence[SaeConfig] | None = None,
    cfg: TrainConfig | None = None,
    *,
    hookpoint: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **sae_kwargs: Any,
) -> Sae | list[Sae]:
    """Train SAE(s) on harvested activations and return them in raw activation units.

    `sae_cfg` None builds a TopK SAE from `sae_kwargs` (n_latents=..., k=...) with d_in from the data.
    Several configs train together from one pass over the data.
    """
    cfg = cfg or TrainConfig()
    if isinstance(data, ActivationCache):
        hp = data._check_hookpoint(hookpoint)
        d_in = data.d[hp]
        meta = {"hookpoint": hp, "model_name": data.info.get("model")}
    else:
        hp = hookpoint
        d_in = data.shape[-1] if isinstance(data, Tensor) else None
        meta = {"hookpoint": hp}
    if sae_cfg is None:
        if d_in is None:
            raise ConfigError("pass sae_cfg=SaeConfig(d_in=...) when training from a stream")
        sae_cfg = SaeConfig(d_in=d_in, **{**{k: v for k, v in meta.items() if v is not None}, **sae_kwargs})
    elif sae_kwargs:
        raise ConfigError(f"pass either sae_cfg or SAE keyword arguments, not both (got {sorted(sae_kwargs)})")
    cfgs = [sae_cfg] if isinstance(sae_cfg, SaeConfig) else list(sae_cfg)
    saes = [Sae(c, seed=cfg.seed + i) for i, c in enumerate(cfgs)]
    trainer = Trainer(saes, cfg)
    trainer.fit(data, hp if isinstance(data, ActivationCache) else None, progress=progress)
    trainer.fold()
    if out is not None:
        trainer.save(out)
    return saes[0] if isinstance(sae_cfg, SaeConfig) else saes
