"""The training loop's callback interface: what a logger, a test or the TrainingMonitor widget receives.

    class Printer(TrainCallback):
        every_s = 2.0                                   # at most one on_log every 2 s (the history keeps all)
        def on_log(self, entry, arrays):
            print(entry["tokens"], [s["fvu"] for s in entry["saes"]])

    saekit.train(cache, k=32, callbacks=[Printer()])

Everything handed over is plain data. `entry` is the history entry the trainer records every
`TrainConfig.log_every` steps (step, tokens, lr, tokens_per_s, elapsed_s, eta_s, steps, total_tokens and per
SAE loss, fvu, aux_loss, l0, dead_fraction, window_dead_fraction, density_histogram = log10 firing
frequency over the window, n_latents, architecture); `arrays` holds one `LogArrays` per SAE (the window's
per-latent density [F] and dead mask [F] on the CPU, which the trainer already brings there to log, and
`top_rows` to find where given latents fire hardest in the current batch). Plain callables
(`fn(entry)`) are still accepted and get every entry.

Throttling: `every_s` spaces the deliveries of `on_log` in wall-clock time (the first and the last entry of
a run always arrive). The loop adds no host synchronisation of its own: entries are only built on logging
steps, where the metrics already come to the host.

Stopping: a callback may call `trainer.request_stop()` (from any thread); the loop ends before the next
step, writes its checkpoint when `fit` has a `checkpoint_dir`, and `Trainer.resume` continues exactly.

`NewlyAlive` turns the arrays into "latents that just came alive" (dead or never fired at the previous
entry, firing in this window), each with its top-activating token and context when the data carries
token positions (`TokenContexts`, from an activation cache's token_ids / context_index / position).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from ..saes import is_dense_code

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclass
class LogArrays:
    """Per-latent arrays of one SAE at one log entry (all on the CPU except inside `top_rows`)."""

    density_F: Tensor
    """[F] float64: fraction of the window's tokens on which each latent fired."""
    dead_F: Tensor
    """[F] bool: latents silent for TrainConfig.dead_after tokens (the AuxK dead mask)."""
    acts: Tensor | None = None
    """The current batch's codes: [B, K] with `indices`, or dense [B, F]."""
    indices: Tensor | None = None
    """[B, K] latent indices of `acts`, or an empty tensor for dense codes."""
    rows_meta: dict[str, Tensor] | None = None
    """{'context_index': [B], 'position': [B]} of the batch rows when the data carries them, else None."""

    def top_rows(self, latents: Sequence[int]) -> list[tuple[int, float]]:
        """For each latent, (row of the current batch where it is largest, its activation); (-1, 0.0) if silent."""
        if self.acts is None or not len(latents):
            return [(-1, 0.0) for _ in latents]
        acts = self.acts.detach().float()
        out = []
        for f in latents:
            if self.indices is None or is_dense_code(self.indices):
                col_B = acts[:, f]
            else:
                col_B = torch.where(self.indices == f, acts, torch.zeros_like(acts)).amax(1)
            v, r = col_B.max(0)
            out.append((int(r), float(v)) if float(v) > 0 else (-1, 0.0))
        return out


class TrainCallback:
    """Base of the trainer's callbacks; override what you need. All methods run on rank 0 only."""

    every_s: float = 0.0
    """Least wall-clock seconds between two `on_log` calls (0: every entry)."""
    wants_tokens: bool = False
    """True asks the trainer to carry each batch row's (context_index, position) when the data has them."""

    def on_start(self, trainer: Trainer, data: Any) -> None:
        """Before the first step of `fit` (also of a resumed fit)."""

    def on_log(self, entry: dict[str, Any], arrays: list[LogArrays]) -> None:
        """A history entry (throttled by `every_s`), with one LogArrays per SAE."""

    def on_end(self, trainer: Trainer, info: dict[str, Any]) -> None:
        """After the loop: info = {'status': 'done' | 'stopped', 'step', 'tokens', 'checkpoint': path or None}."""


def as_callback(cb: TrainCallback | Callable[[dict[str, Any]], None]) -> TrainCallback:
    """A TrainCallback for `cb`: itself, or a wrapper giving a plain function every entry."""
    if isinstance(cb, TrainCallback):
        return cb
    if not callable(cb):
        from ..errors import TrainingError

        raise TrainingError(f"a training callback must be a TrainCallback or a function of the entry, got {type(cb).__name__}")
    return FunctionCallback(cb)


class FunctionCallback(TrainCallback):
    """A plain function `fn(entry)` called with every history entry."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def on_log(self, entry: dict[str, Any], arrays: list[LogArrays]) -> None:
        self.fn(entry)


class Throttle:
    """Lets through the first call, then one per `every_s` seconds (the clock is injectable for tests)."""

    def __init__(self, every_s: float, clock: Callable[[], float]) -> None:
        self.every_s = every_s
        self.clock = clock
        self.last = -math.inf

    def ready(self, force: bool = False) -> bool:
        now = self.clock()
        if force or now - self.last >= self.every_s:
            self.last = now
            return True
        return False


# -- newly alive latents ------------------------------------------------------------------------------


class TokenContexts:
    """Token and preceding context of a cache row given its (context_index, position): from the cache's meta columns."""

    def __init__(self, token_ids: Tensor, context_index: Tensor, position: Tensor, decode: Callable[[int], str] | None = None):
        self.token_ids = token_ids.long()
        self.context_index = context_index.long()
        self.position = position.long()
        self.decode = decode or (lambda i: f"<{i}>")
        order = torch.argsort(self.context_index * (int(self.position.max()) + 1 if len(self.position) else 1) + self.position)
        self.order = order
        self.sorted_ctx = self.context_index[order]
        self.sorted_pos = self.position[order]

    @classmethod
    def from_cache(cls, cache: Any, decode: Callable[[int], str] | None = None) -> TokenContexts | None:
        """From an ActivationCache that stores token_ids / context_index / position; None when it does not."""
        try:
            return cls(cache.load("token_ids"), cache.load("context_index"), cache.load("position"), decode)
        except Exception:  # an in-memory cache of bare activations has no meta columns
            return None

    def lookup(self, context_index: int, position: int, width: int = 12) -> tuple[str, list[str]]:
        """(the token, up to `width` tokens ending with it) of the row at (context_index, position)."""
        lo = int(torch.searchsorted(self.sorted_ctx, torch.tensor(context_index)))
        hi = int(torch.searchsorted(self.sorted_ctx, torch.tensor(context_index), right=True))
        pos = self.sorted_pos[lo:hi]
        end = lo + int(torch.searchsorted(pos, torch.tensor(position), right=True))
        rows = self.order[max(lo, end - width) : end]
        toks = [self.decode(int(t)) for t in self.token_ids[rows]]
        return (toks[-1] if toks else "?"), toks


class NewlyAlive:
    """Latents that came alive since the previous entry, per SAE: dead (or never fired) then, firing now."""

    def __init__(self, max_rows: int = 8) -> None:
        self.max_rows = max_rows
        self.ever: list[Tensor] = []
        self.prev_dead: list[Tensor] = []

    def update(self, entry: dict[str, Any], arrays: list[LogArrays], contexts: TokenContexts | None) -> list[dict[str, Any]]:
        """Rows {sae, latent, step, tokens, density, act, token, context} for this entry (at most max_rows per SAE)."""
        rows: list[dict[str, Any]] = []
        first = not self.ever
        if first:
            self.ever = [a.density_F > 0 for a in arrays]
            self.prev_dead = [a.dead_F.clone() for a in arrays]
            return rows  # at the first entry every latent "comes alive": nothing to report
        for i, a in enumerate(arrays):
            fired_F = a.density_F > 0
            new_F = fired_F & (self.prev_dead[i] | ~self.ever[i])
            self.ever[i] |= fired_F
            self.prev_dead[i] = a.dead_F.clone()
            latents = torch.nonzero(new_F).flatten()
            if not len(latents):
                continue
            latents = latents[torch.argsort(a.density_F[latents], descending=True)][: self.max_rows].tolist()
            for f, (r, act) in zip(latents, a.top_rows(latents)):
                row = {"sae": i, "latent": int(f), "step": entry["step"], "tokens": entry["tokens"],
                       "density": float(a.density_F[f]), "act": act, "token": None, "context": None}
                if r >= 0 and contexts is not None and a.rows_meta is not None:
                    c, p = int(a.rows_meta["context_index"][r]), int(a.rows_meta["position"][r])
                    row["token"], row["context"] = contexts.lookup(c, p)
                rows.append(row)
        return rows
