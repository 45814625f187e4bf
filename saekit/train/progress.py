"""Training progress where there is no widget: a tqdm bar (or one compact terminal line) and a final figure.

    saekit.train(cache, k=32, monitor=TerminalProgress(figure=True))   # tqdm while training, matplotlib at the end

`TerminalProgress` is what `TrainingMonitor` falls back to outside a Jupyter kernel, and what
`saekit train` prints in a terminal: step/steps, tokens, FVU, L0, dead fraction, tokens/s and ETA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from .callbacks import LogArrays, TrainCallback

if TYPE_CHECKING:
    from .trainer import Trainer


def fmt_duration(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_line(entry: dict[str, Any]) -> str:
    """One compact line for an entry: 'step 40/100 · 164k tok · fvu 0.213 · L0 31.8 · dead 0.00 · 9.1k tok/s · ETA 0:27'."""
    s = entry["saes"][0]
    more = f" (+{len(entry['saes']) - 1} SAEs)" if len(entry["saes"]) > 1 else ""
    return (
        f"step {entry['step']}/{entry.get('steps', '?')} · {entry['tokens'] / 1e3:.0f}k tok · fvu {s['fvu']:.3f} · "
        f"L0 {s['l0']:.1f} · dead {s['dead_fraction']:.2f}{more} · {entry['tokens_per_s'] / 1e3:.1f}k tok/s · "
        f"ETA {fmt_duration(entry.get('eta_s', 0.0))}"
    )


class TerminalProgress(TrainCallback):
    """A tqdm bar whose postfix is `progress_line`; optionally the run's matplotlib figure at the end."""

    shows_progress = True

    def __init__(self, figure: bool = False, every_s: float = 0.5, file: Any = None) -> None:
        self.figure = figure
        """Draw TrainingHistory.plot() when training ends (plt.show() with an interactive backend)."""
        self.every_s = every_s
        self.file = file
        self.bar: Any = None
        self.fig: Any = None
        self._last = 0

    def on_start(self, trainer: Trainer, data: Any) -> None:
        self.bar = tqdm(total=trainer.cfg.steps, initial=trainer.step, desc="train", unit="step", file=self.file, leave=True)
        self._last = trainer.step

    def on_log(self, entry: dict[str, Any], arrays: list[LogArrays]) -> None:
        if self.bar is None:
            return
        self.bar.update(entry["step"] - self._last)
        self._last = entry["step"]
        self.bar.set_postfix_str(progress_line(entry).split(" · ", 1)[1], refresh=True)

    def on_end(self, trainer: Trainer, info: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(info["step"] - self._last)
            if info["status"] == "stopped":
                self.bar.set_description("stopped")
            self.bar.close()
        if self.figure:
            import matplotlib
            import matplotlib.pyplot as plt

            self.fig = trainer.training_history().plot()
            if "agg" not in matplotlib.get_backend().lower():
                plt.show()
