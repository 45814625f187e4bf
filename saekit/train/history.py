"""A training run's history as plain data: what `saekit.train` keeps on each SAE and saves with the run.

    sae = saekit.train(cache, k=32, out="runs/l6")
    h = sae.training_history                  # TrainingHistory
    h.curve("fvu")                            # (tokens [T], values [T]) of SAE 0
    h.plot()                                  # matplotlib: loss, FVU, L0, dead fraction vs tokens; density
    TrainingHistory.load("runs/l6")           # runs/l6/training_history.json (or a checkpoint's trainer_state.json)

`entries` are the trainer's history entries (see callbacks.py for their fields); `newly_alive` the rows
`NewlyAlive` reported; `status` is 'done', 'stopped' (Stop pressed; `checkpoint` names where to resume) or
'running'.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrainingError

HISTORY_JSON = "training_history.json"
METRICS = ("loss", "fvu", "l0", "dead_fraction")


@dataclass
class TrainingHistory:
    """Config, SAEs and the logged entries of one training run (several SAEs trained together share it)."""

    config: dict[str, Any] = field(default_factory=dict)
    """The run's TrainConfig as a dict."""
    saes: list[dict[str, Any]] = field(default_factory=list)
    """One {architecture, n_latents, k, d_in, hookpoint} per SAE."""
    entries: list[dict[str, Any]] = field(default_factory=list)
    """The trainer's log entries, oldest first."""
    newly_alive: list[dict[str, Any]] = field(default_factory=list)
    """Latents that came alive during the run, with their top token and context when known."""
    status: str = "running"
    """'running', 'done' or 'stopped'."""
    checkpoint: str | None = None
    """The checkpoint folder a stopped run resumes from."""

    def curve(self, metric: str, sae: int = 0) -> tuple[list[int], list[float]]:
        """(tokens seen, metric) over the run for SAE `sae`; metric is an entry field like 'fvu' or 'l0'."""
        xs, ys = [], []
        for e in self.entries:
            if sae < len(e["saes"]) and metric in e["saes"][sae]:
                xs.append(e["tokens"])
                ys.append(float(e["saes"][sae][metric]))
        return xs, ys

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write `folder/training_history.json`."""
        from .. import durable

        path = Path(folder) / HISTORY_JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.write_json(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainingHistory:
        """From a saved run folder (training_history.json), the file itself, or a checkpoint folder."""
        from .checkpoint import STATE_JSON, find_checkpoint, read_state

        p = Path(path)
        if p.is_file():
            return cls._from_json(p)
        if (p / HISTORY_JSON).is_file():
            return cls._from_json(p / HISTORY_JSON)
        if (p / STATE_JSON).exists() or p.with_name(p.name + ".old").exists():
            ckpt = find_checkpoint(p)
            state = read_state(ckpt)
            saes = []
            for i in range(state["n_saes"]):
                try:
                    saes.append(sae_summary(json.loads((ckpt / f"sae_{i}" / "cfg.json").read_text())))
                except (OSError, ValueError):
                    saes.append({})
            cfg = state["cfg"]
            steps = -(-cfg["tokens"] // cfg["batch_size"])
            done = state["step"] >= steps
            return cls(config=cfg, saes=saes, entries=state["history"], status="done" if done else "stopped",
                       checkpoint=None if done else str(ckpt))
        raise TrainingError(
            f"{p} holds no training history ({HISTORY_JSON} or a checkpoint): pass a folder written by "
            f"saekit.train(..., out=...) or Trainer.checkpoint"
        )

    @classmethod
    def _from_json(cls, file: Path) -> TrainingHistory:
        try:
            d = json.loads(file.read_text())
            return cls(**{k: d[k] for k in ("config", "saes", "entries", "newly_alive", "status", "checkpoint") if k in d})
        except (OSError, ValueError, TypeError) as e:
            raise TrainingError(f"{file} is damaged ({type(e).__name__}: {e}); it was written by saekit.train") from None

    def plot(self, fig=None):
        """Matplotlib figure: loss, FVU, L0 and dead fraction against tokens (one line per SAE), and the last
        density histogram with the dead / too sparse / too dense regions shaded."""
        import matplotlib.pyplot as plt

        if fig is None:
            fig = plt.figure(figsize=(12, 5.5))
        axes = fig.subplots(2, 3).flatten()
        for ax, metric in zip(axes[[0, 1, 3, 4]], METRICS):
            for i in range(len(self.saes) or 1):
                xs, ys = self.curve(metric, i)
                ax.plot(xs, ys, label=sae_label(self.saes[i]) if i < len(self.saes) else f"sae {i}")
            ax.set_title(metric)
            ax.set_xlabel("tokens")
            if metric in ("loss", "fvu"):
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        ax = axes[2]
        if self.entries:
            for i, s in enumerate(self.entries[-1]["saes"]):
                h = s["density_histogram"]
                ax.stairs(h["counts"], h["edges"], label=f"sae {i} ({h['dead']} dead)")
            ax.axvspan(-1, 0, color="tab:red", alpha=0.12, label="too dense (>10%)")
            ax.axvspan(h["edges"][0], -5, color="tab:gray", alpha=0.12, label="too sparse (<1e-5)")
            ax.legend(fontsize=7)
        ax.set_title("log10 firing frequency (last window)")
        axes[5].axis("off")
        axes[5].text(0, 1, "\n".join(f"{k}: {v}" for k, v in self.config.items()), va="top", fontsize=7, family="monospace")
        fig.tight_layout()
        return fig


TOPK_STYLE = ("topk", "batchtopk", "matryoshka", "transcoder")
"""Architectures whose sparsity is k; the others ignore k (they have a penalty, or target_l0 through it)."""


def sae_summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """The few SaeConfig fields a history shows; `k` only for the architectures that use it."""
    out = {k: cfg.get(k) for k in ("architecture", "n_latents", "k", "target_l0", "d_in", "hookpoint")}
    if out["architecture"] not in TOPK_STYLE:
        out["k"] = None
    return out


def sae_label(s: dict[str, Any]) -> str:
    """'jumprelu F=512 L0=4' (a target L0) or 'topk F=512 k=4'."""
    sparsity = f" L0={s['target_l0']:g}" if s.get("target_l0") else f" k={s['k']}" if s.get("k") else ""
    return f"{s.get('architecture', 'sae')} F={s.get('n_latents')}{sparsity}"
