"""The training loop and the step: Adam with warmup and linear decay, a token budget, dead-latent
tracking, input normalisation folded into the saved weights, several SAEs per data pass.

    trainer = Trainer(Sae(SaeConfig(d_in=640, n_latents=4096, k=32)), TrainConfig(tokens=300_000))
    trainer.fit(cache)            # an ActivationCache (read many times), a ShuffleBuffer or any iterable of [B, D] batches
    trainer.save("runs/l6")       # cfg.json + sae_weights.safetensors, in raw activation units

Every architecture trains through the same loop; what differs lives on the SAE (`Sae.forward` returns
the full objective; `before_optimizer_step` / `after_optimizer_step` impose constraints such as
unit-norm decoder rows; `on_step` may resample latents). Transcoders (SaeConfig.target_hookpoint)
get their target hook point from the same cache rows as their input.

Exact resume (`checkpoint.py`): `checkpoint(path)` stores weights, Adam moments, the step (which is the
schedule and the data position), dead counters, the density window, history and RNG states (torch's
global one and the trainer's own generator for hooks); `Trainer.resume(path).fit(same data)` continues
the run as if never stopped. Streams (iterables) are resumed by skipping the batches already used, which
replays them exactly when the stream is deterministic (a ShuffleBuffer rebuilt with the same chunks and
seed is).

Data parallel (`distributed.py`): under `torchrun --nproc_per_node N` (or any initialised default
process group) every rank reads its own contiguous 1/N of each global batch, gradients are averaged
before each step (the sparse kernels' gradients are ordinary dense tensors by then), the dead-latent
masks are OR-ed and floating buffers (BatchTopK's threshold) averaged, so all ranks hold identical
SAEs. Per-rank losses normalise by the rank's own variance (as sparsify does), so N ranks match one
process up to that batch-statistics difference. Only rank 0 writes checkpoints and saves.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config import ConfigError, SaeConfig, TrainConfig
from ..errors import TrainingError
from ..metrics import density_histogram
from ..saes import Sae, SaeOutput, is_dense_code
from ..store import ActivationCache
from . import distributed as dd
from . import grad_clip
from ..durable import crash_point
from .callbacks import LogArrays, Throttle, TrainCallback, as_callback
from .checkpoint import resume_trainer, write_checkpoint
from .history import TrainingHistory, sae_summary

SAMPLE_ROWS = 32_768
"""Rows of the data used to estimate the normalisation scale and to initialise the SAEs."""
INPUT = "x"
"""Key of the input hook point in a trainer batch when the data does not name it (tensors, streams)."""
ROW_META = ("context_index", "position")
"""Cache columns carried in each batch (not trained on) when a callback wants tokens (TrainCallback.wants_tokens)."""


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


def fire_counts(acts: Tensor, indices: Tensor, n_latents: int) -> Tensor:
    """Tokens of the batch on which each latent was active [F], from sparse or dense codes."""
    if is_dense_code(indices):
        return (acts > 0).sum(0)
    # index_add_ rather than bincount(indices[acts > 0]): no boolean indexing, so no host sync on a GPU
    counts = torch.zeros(n_latents, dtype=torch.long, device=indices.device)
    return counts.index_add_(0, indices.reshape(-1), (acts > 0).reshape(-1).long())


def check_rows(x: object, d_in: int, what: str) -> None:
    """Raise a TrainingError unless `x` is a floating-point matrix of activation rows [N, d_in]."""
    if not isinstance(x, Tensor):
        raise TrainingError(f"{what} must be a torch.Tensor of activation rows [N, {d_in}], got {type(x).__name__}")
    if x.dim() != 2:
        hint = " (one vector: add a row axis, x[None])" if x.dim() == 1 else " (flatten the leading axes: x.reshape(-1, x.shape[-1]))"
        raise TrainingError(f"{what} must be activation rows [N, {d_in}], got shape {tuple(x.shape)}{hint}")
    if x.shape[-1] != d_in:
        raise TrainingError(f"{what} has width {x.shape[-1]} but the SAE reads width {d_in}: set SaeConfig(d_in={x.shape[-1]}) or pass the right hook point's activations")
    if not x.is_floating_point():
        raise TrainingError(f"{what} must hold floating-point activations, got dtype {x.dtype}: convert with .float()")


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    """A batch on the training device; host rows headed for a GPU go through pinned memory, so the copy
    is asynchronous (the step's kernels queue behind it instead of the host waiting)."""
    if device.type == "cuda" and x.device.type == "cpu":
        return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    return x.to(device)


def _check_finite(x: Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise TrainingError(
            f"{what} contains NaN or inf: the activations are corrupt or overflowed; "
            f"harvest again in float32 (HarvestConfig(dtype='float32'))"
        )


class _Slot:
    """One SAE with its optimiser, dead-latent counters and density window."""

    def __init__(self, sae: Sae, lr: float) -> None:
        self.sae = sae
        self.lr = lr
        params = list(sae.parameters())
        # torch's fused Adam: one kernel per step instead of a dozen passes over every weight (8x faster at
        # 16384 latents on the CPU; same update up to float rounding, tests/test_train_core.py compares)
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        self.opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=6.25e-10, fused=fused)
        self.tokens_since_fired = torch.zeros(sae.n_latents, dtype=torch.long, device=sae.device)
        self.dead_G: Tensor | None = None
        """Indices of the dead latents AuxK trains, as of the last host read (`refresh_dead`); None: read at the next step."""
        self.window_fires = torch.zeros(sae.n_latents, dtype=torch.long, device=sae.device)
        self.window_tokens = 0

    @property
    def target(self) -> str | None:
        return self.sae.cfg.target_hookpoint

    def refresh_dead(self, dead_after: int) -> None:
        """Read the dead latents' indices back to the host's knowledge (their count sets the AuxK product's shape)."""
        self.dead_G = (self.tokens_since_fired >= dead_after).nonzero().squeeze(-1)

    def reset_optimizer_rows(self, rows: Tensor) -> None:
        """Clear Adam's moments of the given latents (every parameter whose first dim is n_latents)."""
        F_ = self.sae.n_latents
        for p in self.sae.parameters():
            st = self.opt.state.get(p)
            if st and p.ndim >= 1 and p.shape[0] == F_:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key][rows] = 0


class Trainer:
    """Train one or several SAEs on the same stream of activations (one data pass for all)."""

    def __init__(
        self,
        saes: Sae | Sequence[Sae],
        cfg: TrainConfig | None = None,
        *,
        callbacks: Sequence[TrainCallback | Callable[[dict[str, Any]], None]] = (),
    ) -> None:
        self.cfg = cfg or TrainConfig()
        saes = [saes] if isinstance(saes, Sae) else list(saes)
        if not saes:
            raise TrainingError("Trainer needs at least one SAE")
        d_ins = {s.d_in for s in saes}
        if len(d_ins) != 1:
            raise TrainingError(f"SAEs trained together must read the same width; got d_in {sorted(d_ins)}")
        self.rank, self.world_size = dd.init_distributed()
        if self.cfg.batch_size % self.world_size:
            raise TrainingError(
                f"batch_size={self.cfg.batch_size} does not split across {self.world_size} ranks: "
                f"choose a batch_size divisible by {self.world_size}"
            )
        self.device = dd.pick_device(self.cfg.device)
        for s in saes:
            s.to(self.device)
            s.train()
        self.slots = [_Slot(s, self.cfg.lr_for(s.n_latents)) for s in saes]
        self.step = 0
        self.scales: dict[str, float] = {}
        self.input_key: str | None = None
        self.initialised = False
        self.history: list[dict[str, Any]] = []
        self.callbacks: list[TrainCallback | Callable[[dict[str, Any]], None]] = list(callbacks)
        """TrainCallback objects, or plain functions of each history entry; see callbacks.py."""
        self._cbs: list[TrainCallback] = [as_callback(cb) for cb in self.callbacks]  # checked now, rebuilt by fit
        self.stop_requested = False
        """Set by `request_stop()`; the loop ends before its next step."""
        self.stopped = False
        """True when the last `fit` ended because a stop was requested."""
        self._throttles: dict[int, Throttle] = {}
        self._meta: tuple[str, ...] = ()
        self.folded = False
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        """Randomness for SAE hooks (resampling); saved in checkpoints."""
        self._first_bad: dict[str, Tensor] = {}  # per hook point: the first device-resident batch with NaN/inf, -1: none

    @property
    def sync_every(self) -> int:
        """Steps between the step's reads of device state (`TrainConfig.sync_every` on this device)."""
        return self.cfg.sync_every_on(self.device)

    @property
    def saes(self) -> list[Sae]:
        return [s.sae for s in self.slots]

    @property
    def sae(self) -> Sae:
        return self.slots[0].sae

    @property
    def scale(self) -> float | None:
        """The input's normalisation scale (None before training starts)."""
        return self.scales.get(self.input_key) if self.input_key is not None else None

    # -- data -----------------------------------------------------------------------------------

    def _keys(self, data, hookpoint: str | None) -> list[str]:
        """[input key, target keys...]: the hook points one trainer batch holds."""
        targets = sorted({t for t in (s.target for s in self.slots) if t is not None})
        if isinstance(data, ActivationCache):
            key = data.check_hookpoint(hookpoint)
            missing = [t for t in targets if t not in data.hookpoints]
            if missing:
                raise TrainingError(
                    f"transcoders here predict {missing}, which this cache does not hold ({data.hookpoints}): "
                    f"harvest the input and target together, e.g. hookpoints=('{key}', '{missing[0]}')"
                )
        else:
            key = hookpoint or INPUT
        return [key] + [t for t in targets if t != key]

    def _batches(self, data, keys: list[str]) -> Iterator[dict[str, Tensor]]:
        """This rank's part of each global batch, from `self.step` on, as {hook point: [B / world, D]}."""
        bs = self.cfg.batch_size
        if isinstance(data, Tensor):
            data = ActivationCache([keys[0]], {keys[0]: data.shape[-1]}, tensors={keys[0]: data}, shards=[{"rows": data.shape[0]}])
        if isinstance(data, ActivationCache):
            if data.n_tokens < bs:
                raise TrainingError(
                    f"the cache holds {data.n_tokens} tokens, fewer than one batch ({bs}): harvest more or lower batch_size"
                )
            cols = keys + list(self._meta)
            it = data.batches(
                cols, bs, seed=self.cfg.seed, epochs=None, start_batch=self.step, rank=self.rank, world_size=self.world_size
            )
            return (dict(zip(cols, b)) for b in it)
        return self._stream(iter(data), keys)

    def _stream(self, it: Iterator, keys: list[str]) -> Iterator[dict[str, Tensor]]:
        local = self.cfg.batch_size // self.world_size
        lo = self.rank * local
        for b in it:
            parts = tuple(b) if isinstance(b, (tuple, list)) else (b,)
            if len(parts) < len(keys):
                raise TrainingError(
                    f"the stream yields {len(parts)} tensor(s) per batch but this trainer needs {len(keys)} "
                    f"({keys}): yield (input, target) tuples for transcoders"
                )
            check_rows(parts[0], self.slots[0].sae.d_in, "a batch of the activation stream")
            yield {k: p[: self.cfg.batch_size][lo : lo + local] for k, p in zip(keys, parts)}

    def _sample(self, data, keys: list[str], first: dict[str, Tensor] | None) -> dict[str, Tensor]:
        if isinstance(data, ActivationCache):
            return {k: data.load(k)[:SAMPLE_ROWS].float() for k in keys}
        if isinstance(data, Tensor):
            return {keys[0]: data[:SAMPLE_ROWS].float()}
        assert first is not None
        return {k: v.float() for k, v in first.items()}

    # -- the loop -------------------------------------------------------------------------------

    def fit(
        self,
        data: ActivationCache | Tensor | Iterable[Tensor] | Iterable[tuple[Tensor, ...]],
        hookpoint: str | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
    ) -> "Trainer":
        """Train until the token budget is spent (continuing from `self.step` after `resume`)."""
        cfg = self.cfg
        if isinstance(data, Tensor):
            check_rows(data, self.slots[0].sae.d_in, "the training data")
        keys = self._keys(data, hookpoint)
        if self.input_key is not None and self.input_key != keys[0] and self.initialised:
            raise TrainingError(f"this run trained on {self.input_key!r}; resume it on the same hook point, not {keys[0]!r}")
        self.input_key = keys[0]
        self._cbs = [as_callback(cb) for cb in self.callbacks]  # functions appended since __init__ too
        self._meta = ROW_META if self._wants_meta(data) else ()
        batches = self._batches(data, keys)
        if not isinstance(data, (ActivationCache, Tensor)) and self.initialised and self.step:
            batches = itertools.islice(batches, self.step, None)  # a resumed stream: skip what was used
        first = None
        for slot in self.slots:  # budget-dependent recipes (`Sae.plan`), the same on every rank
            slot.sae.plan(cfg.steps, fresh=not self.initialised)
        if not self.initialised:
            torch.manual_seed(cfg.seed)
            if not isinstance(data, (ActivationCache, Tensor)):
                first = next(batches, None)
                if first is None:
                    raise TrainingError("the activation stream is empty: harvest some activations first")
            self._initialise(self._sample(data, keys, first))
        steps = cfg.steps
        self.stop_requested = self.stopped = False
        self._throttles = {i: Throttle(cb.every_s, time.perf_counter) for i, cb in enumerate(self._cbs)}
        for cb in self._rank0_callbacks():
            cb.on_start(self, data)
        bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", disable=not progress or self.rank != 0)
        t0, tok0 = time.perf_counter(), self.step * cfg.batch_size
        step0 = self.step
        batch = last = None
        while self.step < steps:
            if self.stop_requested:
                self.stopped = True
                break
            if first is not None:
                batch, first = first, None
            else:
                batch = next(batches, None)
                if batch is None:
                    break
            last = batch
            self._train_step(batch, t0, tok0, bar)
            if checkpoint_dir is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.checkpoint(checkpoint_dir)
            crash_point("train.after_step")
        bar.close()
        self.check_device_batches()
        if self.step >= steps or batch is None:
            self._calibrate(data, keys, last)
        if checkpoint_dir is not None and (self.step > step0 or not self.has_checkpoint(checkpoint_dir)):
            self.checkpoint(checkpoint_dir)
        info = {
            "status": "stopped" if self.stopped else "done",
            "step": self.step,
            "tokens": self.step * cfg.batch_size,
            "checkpoint": str(checkpoint_dir) if checkpoint_dir is not None else None,
        }
        for cb in self._rank0_callbacks():
            cb.on_end(self, info)
        return self

    def request_stop(self) -> None:
        """End `fit` cleanly before its next step (safe from another thread): the checkpoint it then writes
        (with a `checkpoint_dir`) resumes exactly."""
        self.stop_requested = True

    def _rank0_callbacks(self) -> list[TrainCallback]:
        return self._cbs if self.rank == 0 else []

    def _wants_meta(self, data) -> bool:
        """Carry each row's (context_index, position) when a callback asks and the cache stores them."""
        if not any(cb.wants_tokens for cb in self._rank0_callbacks()) or not isinstance(data, ActivationCache):
            return False
        try:  # a harvested cache's shards hold them; caches written from bare tensors may not
            return all(data.shard(0, k).shape[0] == data.shards[0]["rows"] for k in ROW_META)
        except Exception:  # noqa: BLE001 - any reason the column is missing: train without it
            return False

    def training_history(self) -> TrainingHistory:
        """This run's history as a TrainingHistory (config, SAEs, entries; status from the last fit)."""
        done = self.step >= self.cfg.steps
        return TrainingHistory(
            config=self.cfg.to_dict(),
            saes=[sae_summary(s.cfg.to_dict()) for s in self.saes],
            entries=list(self.history),
            status="done" if done else ("stopped" if self.stopped else "running"),
        )

    def _calibrate(self, data, keys: list[str], last: dict[str, Tensor] | None) -> None:
        """Once training ends: each SAE sets what inference needs from its final weights (`Sae.calibrate`),
        from the same sample of normalised inputs in a resumed run as in an uninterrupted one (a cache's or
        tensor's first rows; a stream's last batch)."""
        if isinstance(data, (ActivationCache, Tensor)):
            x = self._sample(data, keys, None)[keys[0]]
        elif last is not None:
            x = last[keys[0]]
        else:
            return
        x = x.to(self.device).float() * self.scales[keys[0]]
        for slot in self.slots:
            slot.sae.calibrate(x)
            dd.broadcast_module_(slot.sae)

    def _initialise(self, sample: dict[str, Tensor]) -> None:
        """Normalisation scales from a data sample (rank 0's for all), then each SAE's data-dependent init."""
        for k, v in sample.items():
            _check_finite(v, f"the activation sample of {k!r}")
        x = sample[self.input_key]
        if x.shape[-1] != self.sae.d_in:
            raise TrainingError(
                f"activations have width {x.shape[-1]} but the SAE reads d_in={self.sae.d_in}: "
                f"set SaeConfig.d_in={x.shape[-1]} or pass the matching hook point"
            )
        self.scales = {k: (input_scale(v) if self.cfg.normalize else 1.0) for k, v in sample.items()}
        self.scales = dd.broadcast_floats(self.scales, self.device)
        for slot in self.slots:
            x_ND = x * self.scales[self.input_key]
            y_ND = sample[slot.target] * self.scales[slot.target] if slot.target is not None else None
            slot.sae.init_from_data(x_ND, y_ND)
            dd.broadcast_module_(slot.sae)
        self.initialised = True

    def _train_step(self, batch: dict[str, Tensor], t0: float, tok0: int, bar) -> None:
        """One optimiser step of every SAE on one batch, then the history entry every log_every steps."""
        cfg = self.cfg
        meta = {k: batch.pop(k) for k in self._meta if k in batch}  # row positions for callbacks, not trained on
        for k, v in batch.items():
            if v.device.type == "cpu":  # read on the host, before it moves: no device read
                _check_finite(v, f"batch {self.step} of {k!r}")
            else:
                self.watch_finite(k, v)
        if self.step % self.sync_every == 0:
            self.read_device_state()
        batch = {k: _to_device(v, self.device).float() * self.scales[k] for k, v in batch.items()}
        factor = lr_factor(self.step, cfg.steps, cfg.warmup_steps, cfg.decay_start)
        record = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == cfg.steps
        logs, arrays = [], []
        for slot in self.slots:
            out = self._optimise(slot, batch, factor)
            self._track(slot, out, batch[self.input_key])
            if record:
                m, density_F = self._metrics(slot, out)
                logs.append(m)
                dead_F = (slot.tokens_since_fired >= cfg.dead_after).cpu() if self.callbacks else None
                arrays.append(LogArrays(density_F, dead_F, out.acts.detach(), out.indices, meta or None))
        self.step += 1
        bar.update()
        if record:
            self._log(logs, factor, t0, tok0, bar, arrays)

    def watch_finite(self, key: str, x: Tensor) -> None:
        """Remember, on the device, the first step whose batch of `key` held NaN or inf (read by `read_device_state`)."""
        first = self._first_bad.get(key)
        if first is None or first.device != x.device:
            first = self._first_bad[key] = torch.full((), -1, dtype=torch.long, device=x.device)
        bad = ~torch.isfinite(x).all() & (first < 0)
        first.copy_(torch.where(bad, self.step, first))

    def read_device_state(self) -> None:
        """The step's host reads, every `sync_every` steps: whether a batch that arrived on the device held NaN or
        inf (`check_device_batches`) and the dead latents AuxK trains."""
        self.check_device_batches()
        for slot in self.slots:
            slot.refresh_dead(self.cfg.dead_after)

    def check_device_batches(self) -> None:
        """Raise a TrainingError naming the first batch that arrived on the device with NaN or inf, if one did
        (also before every checkpoint and at the end of `fit`, so no checkpoint holds weights trained on it)."""
        for key, first in self._first_bad.items():
            bad = int(first)
            if bad >= 0:
                raise TrainingError(
                    f"batch {bad} of {key!r} contains NaN or inf: the activations are corrupt or overflowed; "
                    f"the SAE trained on it for {self.step - bad} step(s) before this check (TrainConfig.sync_every="
                    f"{self.sync_every}), so resume from a checkpoint written before it, and harvest again in float32 "
                    f"(HarvestConfig(dtype='float32'))"
                )

    def _optimise(self, slot: _Slot, batch: dict[str, Tensor], factor: float) -> SaeOutput:
        """Forward, backward (gradients averaged over ranks), the SAE's constraints and Adam's step at lr * factor."""
        sae, cfg = slot.sae, self.cfg
        if slot.dead_G is None:  # resumed from a checkpoint that did not store it
            slot.refresh_dead(cfg.dead_after)
        kwargs = {"target_BD": batch[slot.target]} if slot.target is not None else {}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = sae(batch[self.input_key], dead_mask=slot.dead_G, progress=self.step / cfg.steps, **kwargs)
        slot.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        dd.average_gradients_(sae)
        sae.before_optimizer_step()
        max_grad_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else sae.default_max_grad_norm
        if max_grad_norm:
            grad_clip.clip_(list(sae.parameters()), max_grad_norm, batch[slot.target or self.input_key])
        for g in slot.opt.param_groups:
            g["lr"] = slot.lr * factor
        slot.opt.step()
        sae.after_optimizer_step()
        l0 = out.l0.detach().float().reshape(1).clone()
        dd.mean_over_ranks_(l0)
        sae.update_sparsity(l0[0], (self.step + 1) / cfg.steps)
        return out

    def _track(self, slot: _Slot, out: SaeOutput, x: Tensor) -> None:
        """Dead-latent counters (OR over ranks), buffers averaged over ranks, the density window, resampling."""
        sae, cfg = slot.sae, self.cfg
        fired_F = dd.any_rank(out.fired)
        dd.average_float_buffers_(sae)
        slot.tokens_since_fired += cfg.batch_size
        slot.tokens_since_fired.masked_fill_(fired_F, 0)  # not [fired_F] = 0: no host sync on a GPU
        slot.window_fires += fire_counts(out.acts.detach(), out.indices, sae.n_latents)
        slot.window_tokens += x.shape[0]
        rows = sae.on_step(self.step + 1, x, slot.tokens_since_fired >= cfg.dead_after, self.generator)
        if rows is not None and rows.numel():
            dd.broadcast_module_(sae)
            slot.reset_optimizer_rows(rows)
            slot.tokens_since_fired[rows] = 0
            slot.refresh_dead(cfg.dead_after)  # resampling read the device anyway; the rewritten rows are not dead

    def _metrics(self, slot: _Slot, out: SaeOutput) -> tuple[dict[str, Any], Tensor]:
        """Plain numbers for one SAE: averaged over ranks; the density window is summed and then reset."""
        scalars = torch.stack([out.loss.detach(), out.fvu.detach(), out.aux_loss.detach(), out.l0.detach()]).float()
        fires, tokens = slot.window_fires.clone(), torch.tensor([slot.window_tokens], device=self.device)
        dd.mean_over_ranks_(scalars)
        dd.sum_over_ranks_(fires)
        dd.sum_over_ranks_(tokens)
        loss, fvu_, aux, l0 = scalars.tolist()
        density_F = fires.double().cpu() / max(int(tokens.item()), 1)
        slot.window_fires.zero_()
        slot.window_tokens = 0
        return {
            "loss": loss,
            "fvu": fvu_,
            "aux_loss": aux,
            "l0": l0,
            "dead_fraction": float((slot.tokens_since_fired >= self.cfg.dead_after).float().mean()),
            "window_dead_fraction": float((density_F == 0).double().mean()),
            "density_histogram": density_histogram(density_F, bins=self.cfg.histogram_bins),
            "n_latents": slot.sae.n_latents,
            "architecture": slot.sae.architecture,
        }, density_F

    def _log(
        self, logs: list[dict[str, Any]], factor: float, t0: float, tok0: int, bar, arrays: list[LogArrays]
    ) -> None:
        """Append a history entry and hand it to the callbacks (rank 0 only; each throttled by its every_s)."""
        tokens = self.step * self.cfg.batch_size
        elapsed = max(time.perf_counter() - t0, 1e-9)
        rate = (tokens - tok0) / elapsed
        entry = {
            "step": self.step,
            "steps": self.cfg.steps,
            "tokens": tokens,
            "total_tokens": self.cfg.steps * self.cfg.batch_size,
            "lr": self.slots[0].lr * factor,
            "tokens_per_s": rate,
            "elapsed_s": elapsed,
            "eta_s": (self.cfg.steps - self.step) * self.cfg.batch_size / max(rate, 1e-9),
            "saes": logs,
        }
        self.history.append(entry)
        bar.set_postfix(fvu=f"{logs[0]['fvu']:.3f}", l0=f"{logs[0]['l0']:.1f}", dead=f"{logs[0]['dead_fraction']:.2f}")
        last = self.step >= self.cfg.steps
        for i, cb in enumerate(self._rank0_callbacks()):
            if self._throttles[i].ready(force=last or self.stop_requested):
                cb.on_log(entry, arrays)

    @staticmethod
    def has_checkpoint(checkpoint_dir: str | Path) -> bool:
        """Whether `checkpoint_dir` already holds a checkpoint (a resumed, already finished run needs no new one)."""
        from .checkpoint import STATE_JSON

        path = Path(checkpoint_dir)
        return (path / STATE_JSON).exists() or (path.with_name(path.name + ".old") / STATE_JSON).exists()

    # -- results --------------------------------------------------------------------------------

    def fold(self) -> list[Sae]:
        """Fold the input (and transcoder target) scales into the weights, once: the SAEs then read raw activations."""
        if not self.folded and self.scales:
            for slot in self.slots:
                s_in = self.scales[self.input_key]
                s_out = self.scales[slot.target] if slot.target is not None else None
                if s_in != 1.0 or (s_out is not None and s_out != 1.0):
                    slot.sae.fold_input_scale_(s_in, target_scale=s_out)
        for s in self.saes:
            s.eval()
        self.folded = True
        return self.saes

    def save(self, out: str | Path, names: Sequence[str] | None = None) -> list[Path]:
        """Save each SAE (folded to raw units) as cfg.json + sae_weights.safetensors; several go in subfolders.

        Under data parallelism only rank 0 writes (the SAEs are identical on every rank); every rank returns
        once the files are written, so no rank leaves the process group while rank 0 still works.
        """
        self.fold()
        out = Path(out)
        if len(self.saes) == 1 and names is None:
            paths = [out]
        else:
            names = list(names) if names is not None else [f"sae_{i}" for i in range(len(self.saes))]
            paths = [out / n for n in names]
        if self.rank == 0:
            for s, p in zip(self.saes, paths):
                s.save(p)
        dd.barrier()
        return paths

    # -- checkpoints (the format and the crash-safe write live in checkpoint.py) ----------------

    def checkpoint(self, path: str | Path) -> Path:
        """Everything needed to continue exactly: weights (unfolded), Adam state, step, scales, RNG, counters.

        Crash-safe: written into `path.tmp`, then swapped in by renames (the old checkpoint is kept as
        `path.old` until the new one is in place; `resume` falls back to it). Rank 0 writes, all ranks wait.
        """
        if self.folded:
            raise TrainingError("this trainer's SAEs are already folded for saving; checkpoint before fold()/save()")
        self.check_device_batches()
        path = Path(path)
        if self.rank == 0:
            write_checkpoint(self, path)
        dd.barrier()
        return path

    @classmethod
    def resume(cls, path: str | Path, cfg: TrainConfig | None = None) -> "Trainer":
        """Rebuild a trainer from `checkpoint(path)`; `fit` on the same data then continues the same run."""
        return resume_trainer(cls, path, cfg)


def train(
    data: ActivationCache | Tensor | Iterable[Tensor],
    sae_cfg: SaeConfig | Sequence[SaeConfig] | None = None,
    cfg: TrainConfig | None = None,
    *,
    hookpoint: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainCallback | Callable[[dict[str, Any]], None]] = (),
    monitor: TrainCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    **sae_kwargs: Any,
) -> Sae | list[Sae]:
    """Train SAE(s) on harvested activations and return them in raw activation units.

    `sae_cfg` None builds an SAE from `sae_kwargs` (architecture=..., n_latents=..., k=...) with d_in
    from the data. Several configs train together from one pass over the data (four widths or four
    k values at once); with `out` they are saved in subfolders sae_0, sae_1...

    Each returned SAE carries the run's `training_history` (a TrainingHistory; with `out` it is also
    saved as out/training_history.json). `callbacks` receive the log entries as they come (callbacks.py);
    `monitor` is one more callback that shows the run, e.g. `saekit.widgets.TrainingMonitor()`, whose
    Stop button ends training at the next step. With `checkpoint_dir` the run checkpoints there (every
    TrainConfig.checkpoint_every steps, when stopped, and at the end) and a call that finds a checkpoint
    there resumes it exactly (same data and config; the finished checkpoint is kept: delete it to retrain).
    """
    cfg = cfg or TrainConfig()
    if isinstance(data, ActivationCache):
        hp = data.check_hookpoint(hookpoint)
        d_in = data.d[hp]
        meta = {"hookpoint": hp, "model_name": data.info.get("model")}
    else:
        hp = hookpoint
        d_in = data.shape[-1] if isinstance(data, Tensor) and data.dim() == 2 else None
        if isinstance(data, Tensor) and d_in is None:
            check_rows(data, data.shape[-1] if data.dim() else 0, "the training data")
        meta = {"hookpoint": hp}
    if sae_cfg is None:
        if d_in is None:
            raise ConfigError("pass sae_cfg=SaeConfig(d_in=...) when training from a stream")
        sae_cfg = SaeConfig(d_in=d_in, **{**{k: v for k, v in meta.items() if v is not None}, **sae_kwargs})
    elif sae_kwargs:
        raise ConfigError(f"pass either sae_cfg or SAE keyword arguments, not both (got {sorted(sae_kwargs)})")
    cfgs = [sae_cfg] if isinstance(sae_cfg, SaeConfig) else list(sae_cfg)
    cbs = [as_callback(c) for c in callbacks] + ([as_callback(monitor)] if monitor is not None else [])
    if checkpoint_dir is not None and Trainer.has_checkpoint(checkpoint_dir):
        trainer = Trainer.resume(checkpoint_dir, cfg)
        if [s.cfg for s in trainer.saes] != cfgs:
            raise TrainingError(
                f"{checkpoint_dir} holds a run of other SAEs ({[s.cfg for s in trainer.saes]}); pass another "
                f"checkpoint_dir or delete it to train these"
            )
        trainer.callbacks = cbs
    else:
        trainer = Trainer([Sae(c, seed=cfg.seed + i) for i, c in enumerate(cfgs)], cfg, callbacks=cbs)
    if any(getattr(c, "shows_progress", False) for c in cbs):
        progress = False  # the monitor draws the progress
    trainer.fit(data, hp if isinstance(data, ActivationCache) else None, checkpoint_dir=checkpoint_dir, progress=progress)
    history = trainer.training_history()
    if trainer.stopped and checkpoint_dir is not None:
        history.checkpoint = str(checkpoint_dir)
    for c in cbs:
        history.newly_alive += list(getattr(c, "newly_alive_rows", []))
    trainer.fold()
    saes = trainer.saes
    for s in saes:
        s.training_history = history
    if out is not None:
        trainer.save(out)
        if trainer.rank == 0:
            history.save(out)
    return saes[0] if isinstance(sae_cfg, SaeConfig) else saes
