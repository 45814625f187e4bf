"""TrainingMonitor: watch SAEs learn while `saekit.train` runs in the notebook, and stop them cleanly.

    from saekit.widgets import TrainingMonitor
    sae = saekit.train(cache, k=32, monitor=TrainingMonitor(tokenizer=model.tokenizer), checkpoint_dir="runs/ckpt")
    TrainingMonitor.from_run("runs/l6")          # a finished (or stopped) run's curves again
    mon.to_html("training.html")                  # standalone, offline

It is a `TrainCallback` (saekit/train/callbacks.py): the trainer hands it each log entry (throttled to
`every_s`), it packs the curves (loss, FVU, L0, dead fraction vs tokens, one line per SAE) and the last
log10 firing-frequency histograms into float32 bytes, keeps a table of latents that just came alive with
their top token and context (when the cache stores token positions and a tokenizer is given), and shows
config, tokens/s and ETA. Stop asks the trainer to end before its next step; `fit` then writes its
checkpoint (with a `checkpoint_dir`), which resumes exactly.

How Stop reaches a busy kernel: while a cell runs, the kernel's main thread handles no widget messages, so
(with ipykernel >= 7) the monitor routes its own comm to a kernel subshell thread for the run; the click
then lands at once. Where that is not available the button is disabled and says so (interrupting the kernel
then ends training without a final checkpoint; TrainConfig.checkpoint_every bounds what is lost).

Outside a Jupyter kernel (a terminal, a script) it draws a tqdm bar instead and, with `figure=True`, the
matplotlib figure of the run at the end (`TerminalProgress`).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import traitlets

from ..errors import WidgetError
from ..train.callbacks import LogArrays, NewlyAlive, TokenContexts, TrainCallback
from ..train.history import METRICS, TrainingHistory, sae_summary
from ..train.progress import TerminalProgress
from .base import SaeWidget

if TYPE_CHECKING:
    from ..train.trainer import Trainer

MAX_ALIVE_ROWS = 40
"""Newly alive latents kept in the table (most recent first)."""


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets can be shown), False in a terminal or a script."""
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and getattr(ip, "kernel", None) is not None
    except ImportError:
        return False


class TrainingMonitor(SaeWidget, TrainCallback):
    """`TrainingMonitor(tokenizer=None, every_s=0.5, figure=True)`: pass as `saekit.train(..., monitor=...)`."""

    _asset_js = "training_monitor.js"
    _asset_css = "training_monitor.css"
    _snapshot_height = 520

    status = traitlets.Unicode("idle").tag(sync=True)
    """'idle', 'running', 'stopping', 'stopped' or 'done'."""
    summary = traitlets.Dict({}).tag(sync=True)
    """The latest entry's step, steps, tokens, total_tokens, tokens_per_s, elapsed_s, eta_s, lr."""
    config = traitlets.Dict({}).tag(sync=True)
    """The run's TrainConfig and its SAEs ({'train': {...}, 'saes': [...]})."""
    newly_alive = traitlets.List([]).tag(sync=True)
    """Latents that came alive, newest first: {sae, latent, step, tokens, density, act, token, context}."""
    checkpoint = traitlets.Unicode("").tag(sync=True)
    """Where a stopped run's checkpoint was written ('' when none)."""
    message = traitlets.Unicode("").tag(sync=True)
    """A note for the user (why Stop cannot act, where the checkpoint is)."""
    _curves = traitlets.Bytes(b"").tag(sync=True)
    """float32 [n_saes, len(METRICS), T]: loss, fvu, l0, dead_fraction per entry."""
    _x = traitlets.Bytes(b"").tag(sync=True)
    """float64 [T]: tokens seen at each entry."""
    _hist = traitlets.Bytes(b"").tag(sync=True)
    """float32 [n_saes, bins]: the last window's log10 firing-frequency histogram per SAE."""
    _hist_meta = traitlets.Dict({}).tag(sync=True)
    """{'edges': [bins + 1], 'dead': [n_saes]}."""
    _n_saes = traitlets.Int(0).tag(sync=True)
    _stop_clicks = traitlets.Int(0).tag(sync=True)
    """The Stop button increments this."""
    _can_stop = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        every_s: float = 0.5,
        figure: bool = True,
        display: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.every_s = every_s
        self.wants_tokens = True
        self.shows_progress = True
        self._decode = _decoder(tokenizer)
        self._display = in_kernel() if display is None else display
        self._fallback = None if self._display else TerminalProgress(figure=figure, every_s=every_s)
        self._trainer: Trainer | None = None
        self._entries: list[dict[str, Any]] = []
        self._alive = NewlyAlive()
        self._contexts: TokenContexts | None = None
        self._shown = False
        self._handle: Any = None
        self._route = None
        self.newly_alive_rows: list[dict[str, Any]] = []
        self.observe(lambda _: self.stop(), "_stop_clicks")

    def _repr_args(self) -> str:
        return f"status={self.status!r}, entries={len(self._entries)}, saes={self._n_saes}"

    # -- the callback ---------------------------------------------------------------------------

    def on_start(self, trainer: Trainer, data: Any) -> None:
        self._trainer = trainer
        self._entries = list(trainer.history)
        self._alive = NewlyAlive()
        from ..store import ActivationCache

        self._contexts = TokenContexts.from_cache(data, self._decode) if isinstance(data, ActivationCache) else None
        with self.hold_sync():
            self.config = {"train": trainer.cfg.to_dict(), "saes": [sae_summary(s.cfg.to_dict()) for s in trainer.saes]}
            self._n_saes = len(trainer.saes)
            self.status = "running"
            self.checkpoint = ""
            self._draw_entries()
        if self._fallback is not None:
            self._fallback.on_start(trainer, data)
            return
        if not self._shown:
            from IPython.display import display

            self._handle = display(self, display_id=True)
            self._shown = True
        self._route = route_comm_to_subshell(self)
        self._can_stop = self._route is not None
        self.message = "" if self._can_stop else ("Stop needs ipykernel ≥ 7 (kernel subshells); interrupting the kernel ends training without a final "
                        "checkpoint (TrainConfig.checkpoint_every bounds what is lost)")

    def on_log(self, entry: dict[str, Any], arrays: list[LogArrays]) -> None:
        if not self._entries or self._entries[-1] is not entry:
            self._entries = list(self._trainer.history) if self._trainer is not None else self._entries + [entry]
        rows = self._alive.update(entry, arrays, self._contexts)
        self.newly_alive_rows += rows
        with self.hold_sync():
            if rows:
                self.newly_alive = (rows[::-1] + list(self.newly_alive))[:MAX_ALIVE_ROWS]
            self._draw_entries()
        if self._fallback is not None:
            self._fallback.on_log(entry, arrays)

    def on_end(self, trainer: Trainer, info: dict[str, Any]) -> None:
        self._entries = list(trainer.history)
        with self.hold_sync():
            self._draw_entries()
            self.summary = {**self.summary, "step": info["step"], "tokens": info["tokens"], "eta_s": 0.0}
            self.status = info["status"]
            self.checkpoint = (info["checkpoint"] or "") if info["status"] == "stopped" else ""
            if info["status"] == "stopped":
                self.message = (
                    f"stopped at step {info['step']}; checkpoint: {info['checkpoint']} (train again with the same "
                    f"checkpoint_dir to resume)" if info["checkpoint"] else f"stopped at step {info['step']} (no checkpoint_dir: not resumable)"
                )
            else:
                self.message = ""
            self._can_stop = False
        if self._route is not None:
            self._route()
            self._route = None
        if self._handle is not None:
            self._handle.update(self)  # the saved output's static snapshot shows the finished run, not its start
        if self._fallback is not None:
            self._fallback.on_end(trainer, info)

    def stop(self) -> None:
        """End the run cleanly before its next step (what the Stop button does)."""
        if self._trainer is not None and self.status == "running":
            self._trainer.request_stop()
            self.status = "stopping"

    # -- drawing --------------------------------------------------------------------------------

    def _draw_entries(self) -> None:
        es = self._entries
        n = max((len(e["saes"]) for e in es), default=self._n_saes)
        curves = np.full((n, len(METRICS), len(es)), np.nan, dtype="<f4")
        for t, e in enumerate(es):
            for i, s in enumerate(e["saes"]):
                curves[i, :, t] = [s.get(m, np.nan) for m in METRICS]
        self._x = np.array([e["tokens"] for e in es], dtype="<f8").tobytes()
        self._curves = curves.tobytes()
        self._n_saes = n
        if es:
            last = es[-1]
            self._hist = np.array([s["density_histogram"]["counts"] for s in last["saes"]], dtype="<f4").tobytes()
            self._hist_meta = {
                "edges": list(last["saes"][0]["density_histogram"]["edges"]),
                "dead": [int(s["density_histogram"]["dead"]) for s in last["saes"]],
            }
            self.summary = {k: last[k] for k in ("step", "steps", "tokens", "total_tokens", "tokens_per_s", "elapsed_s", "eta_s", "lr") if k in last}

    # -- saved runs -----------------------------------------------------------------------------

    @property
    def history(self) -> TrainingHistory:
        """What this monitor has seen, as a TrainingHistory."""
        cfg = self.config or {}
        return TrainingHistory(
            config=cfg.get("train", {}), saes=cfg.get("saes", []), entries=list(self._entries),
            newly_alive=list(self.newly_alive_rows), status=self.status, checkpoint=self.checkpoint or None,
        )

    @classmethod
    def from_history(cls, history: TrainingHistory, **kwargs: Any) -> TrainingMonitor:
        mon = cls(display=True, **kwargs)  # a view of a saved run: never falls back to a terminal bar
        mon._entries = list(history.entries)
        mon.newly_alive_rows = list(history.newly_alive)
        with mon.hold_sync():
            mon.config = {"train": dict(history.config), "saes": list(history.saes)}
            mon._n_saes = len(history.saes)
            mon._draw_entries()
            mon.newly_alive = list(history.newly_alive)[::-1][:MAX_ALIVE_ROWS]
            mon.status = history.status
            mon.checkpoint = history.checkpoint or ""
        return mon

    @classmethod
    def from_run(cls, path: str | Path, **kwargs: Any) -> TrainingMonitor:
        """Reopen a run: a folder saved by `saekit.train(..., out=path)`, its training_history.json, or a checkpoint."""
        return cls.from_history(TrainingHistory.load(path), **kwargs)


def _decoder(tokenizer: Any) -> Callable[[int], str] | None:
    if tokenizer is None:
        return None
    if callable(getattr(tokenizer, "decode", None)):
        return lambda i: tokenizer.decode([i])
    if callable(tokenizer):
        return tokenizer
    raise WidgetError(f"tokenizer must have .decode(ids) or be a function id -> str, got {type(tokenizer).__name__}")


def route_comm_to_subshell(widget: SaeWidget) -> Callable[[], None] | None:
    """Have a kernel subshell thread handle `widget`'s incoming messages (so clicks arrive while a cell runs).

    Uses ipykernel 7's subshells and its comm routing hook (`_reply_subshell_for`); returns a function that
    undoes it, or None where the kernel has no subshells (then nothing changes).
    """
    try:
        from IPython import get_ipython

        kernel = get_ipython().kernel
        sct = kernel.shell_channel_thread
        comm = widget.comm
        if sct is None or comm is None or not hasattr(comm, "_reply_subshell_for"):
            return None
        got: queue.Queue = queue.Queue()

        def create() -> None:
            try:
                got.put(sct.manager._create_subshell())
            except Exception as e:  # noqa: BLE001 - reported as "no subshell"
                got.put(e)

        sct.io_loop.add_callback(create)
        sid = got.get(timeout=5)
        if isinstance(sid, Exception):
            return None
    except Exception:  # noqa: BLE001 - any kernel without this machinery: Stop is just not live
        return None
    comm._reply_subshell_for = lambda data, default: sid
    done = threading.Event()

    def undo() -> None:
        if done.is_set():
            return
        done.set()
        comm.__dict__.pop("_reply_subshell_for", None)

        def delete() -> None:
            try:
                sct.manager._delete_subshell(sid)
            except Exception:  # noqa: BLE001
                pass

        sct.io_loop.add_callback(delete)

    return undo
