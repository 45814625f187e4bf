"""`run`: the evaluations in one call, one summary table, one plot per evaluation, evals.json saved."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import EVALS
from ..durable import write_json
from ..errors import EvalError

EVALS_FILE = "evals.json"


@dataclass
class EvalReport:
    """What `run` measured: `table` (one row per evaluation and metric), `details` (each evaluation's
    own DataFrame), `seconds` per evaluation, and where evals.json was written."""

    table: Any
    details: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    def __repr__(self) -> str:
        return f"EvalReport({list(self.details)}, saved={str(self.path) if self.path else None})\n{self.table}"

    def plot(self, name: str, ax=None):
        """The plot of one evaluation: autointerp score histograms, probing accuracy against k, full absorption
        rate and absorption fraction per evaluated letter."""
        import matplotlib.pyplot as plt

        if name not in self.details:
            raise EvalError(f"{name!r} was not run; run has {list(self.details)}")
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.2))
        df = self.details[name]
        if name == "autointerp":
            for col in ("detection_random", "detection_near_miss", "fuzzing"):
                if col in df:
                    ax.hist(df[col], bins=10, range=(0, 1), alpha=0.5, label=col)
            ax.axvline(0.5, color="gray", ls=":", label="chance")
            ax.set_xlabel("balanced accuracy")
            ax.set_ylabel("features")
        elif name == "sparse_probing":
            ks = [c for c in df.columns if c.startswith("k=")]
            for _, r in df.iterrows():
                line, = ax.plot([int(k[2:]) for k in ks], [r[k] for k in ks], marker="o", label=f"{r['task']}: {r['class']}")
                ax.axhline(r["full"], color=line.get_color(), ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("k latents (dashed: full-activation probe)")
            ax.set_ylabel("balanced accuracy")
        elif name == "absorption":
            ev = df[df["evaluated"]]
            pos = range(len(ev))
            ax.bar([p - 0.2 for p in pos], ev["full_absorption_rate"], width=0.4, label="full absorption rate")
            ax.bar([p + 0.2 for p in pos], ev["absorption_fraction"], width=0.4, label="absorption fraction")
            ax.set_xticks(list(pos), list(ev.index))
            ax.set_xlabel("first letter (probe F1 above the threshold)")
            ax.set_ylabel("share of true positives")
        ax.set_title(name)
        ax.legend(fontsize=7)
        return ax

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.table.to_dict(orient="records"), "seconds": self.seconds,
                "details": {k: json.loads(v.to_json(orient="table")) for k, v in self.details.items()}}


def _summary_rows(name: str, df) -> list[dict[str, Any]]:
    if name == "autointerp":
        summ = df.attrs.get("summary", {})
        return [{"eval": name, "metric": k, "value": v} for k, v in summ.items()]
    if name == "sparse_probing":
        cols = ["full"] + [c for c in df.columns if c.startswith("k=")]
        return [{"eval": name, "metric": f"accuracy {c}", "value": float(df[c].mean())} for c in cols]
    return [{"eval": name, "metric": "full_absorption_rate", "value": df.attrs["overall"]},
            {"eval": name, "metric": "absorption_fraction", "value": df.attrs["absorption_fraction"]},
            {"eval": name, "metric": "mean_split_latents", "value": df.attrs["mean_split_latents"]},
            {"eval": name, "metric": "mean_main_recall", "value": df.attrs["mean_main_recall"]},
            {"eval": name, "metric": "letters_evaluated", "value": df.attrs["n_letters"]}]


def run(model, sae, stats=None, evals: Sequence[str] = EVALS, *, out: str | Path | None = None,
        options: dict[str, dict] | None = None, progress: bool = True) -> EvalReport:
    """Run `evals` (any of 'autointerp', 'sparse_probing', 'absorption') on `sae` at its hook point.
    `options` maps an evaluation to its keyword arguments (e.g. {'autointerp': {'explainer': backend}}).
    The report is saved as `out`/evals.json (default: the SAE's folder when it has one, else not saved);
    per-feature autointerp scores are merged into `stats` (`stats.meta['evals']`) for the browser."""
    import pandas as pd

    from .absorption import absorption
    from .autointerp import autointerp
    from .sparse_probing import sparse_probing

    evals = [evals] if isinstance(evals, str) else list(evals)
    unknown = [e for e in evals if e not in EVALS]
    if unknown or not evals:
        raise EvalError(f"unknown evaluation(s) {unknown}; choose from {', '.join(EVALS)}")
    if "autointerp" in evals and stats is None:
        raise EvalError("autointerp explains from FeatureStats: pass stats= (saekit.features.feature_stats or saekit.pretrained.stats)")
    options = options or {}
    details, seconds, rows = {}, {}, []
    for name in evals:
        t0 = time.perf_counter()
        kw = dict(options.get(name, {}))
        if name == "autointerp":
            res = autointerp(stats, model=model, sae=sae, progress=progress, **kw)
            df = res.table()
            df.attrs["summary"] = res.summary()
        elif name == "sparse_probing":
            df = sparse_probing(model, sae, **kw)
        else:
            df = absorption(model, sae, **kw)
        seconds[name] = time.perf_counter() - t0
        details[name] = df
        rows += _summary_rows(name, df)
    report = EvalReport(pd.DataFrame(rows), details, seconds)
    folder = Path(out) if out is not None else getattr(sae, "path", None)
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        report.path = Path(folder) / EVALS_FILE
        write_json(report.to_json(), report.path)
    return report
