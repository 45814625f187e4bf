"""FeatureBrowser: a sortable, filterable, searchable table of every feature (`FeatureTable`, numbers sent
as packed float32 bytes, rows rendered virtually so 16k+ features stay fast) above a `FeatureDashboard`
that shows the selected row. The default order is `FeatureStats.order()`: by interpretability score,
dense features (flagged in the table) and features that never fired last."""

from __future__ import annotations

from typing import Any

import ipywidgets
import numpy as np
import traitlets

from ..errors import WidgetError
from ..features import DENSE_DENSITY, FeatureStats
from .base import SaeWidget, export_html, safe_snapshot, snapshot_bundle, snapshot_frame
from .dashboard import FeatureDashboard

SORTABLE = ("score", "feature", "density", "mean_act", "max_act", "top_tokens", "label", "autointerp")
NUMERIC = ("density", "mean_act", "max_act", "score", "rank", "dense")
"""Rows of the packed `_numeric` bytes, F float32 each: rank is the position in `FeatureStats.order()`,
dense is 1.0 for dense features."""


def _check_sort(sort_by: str) -> str:
    if sort_by not in SORTABLE:
        raise WidgetError(f"unknown sort_by {sort_by!r}: sort the feature table by one of {', '.join(map(repr, SORTABLE))}")
    return sort_by


def _shown(token: str) -> str:
    """Whitespace-only tokens as visible marks (a bare space would look like an empty cell)."""
    return token if token.strip() else token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def eval_scores(stats: FeatureStats) -> dict[str, dict[str, float]]:
    """{feature: {'detection': .., 'fuzzing': ..}} from the autointerp scores saved in `stats.meta`."""
    saved = (stats.meta.get("evals") or {}).get("autointerp") or {}
    out = {}
    for f, s in saved.items():
        row = {k: round(float(s[src]), 3) for k, src in (("detection", "detection_random"), ("fuzzing", "fuzzing")) if src in s}
        if row:
            out[str(f)] = row
    return out


class FeatureTable(SaeWidget):
    """The table alone. `selected` is the clicked feature (-1: none); the rest is the view's state."""

    _asset_js = "feature_table.js"
    _asset_css = "feature_table.css"
    _snapshot_height = 420

    selected = traitlets.Int(-1).tag(sync=True)
    """Feature of the selected row, -1 when none is."""
    sort_by = traitlets.Enum(SORTABLE, "score").tag(sync=True)
    """Column the rows are sorted by; 'score' is `FeatureStats.order()` (dense and dead features last)."""
    descending = traitlets.Bool(True).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    """Search text: '#12' finds feature 12; other text matches top tokens and labels."""
    min_log_density = traitlets.Float(-8.0).tag(sync=True)
    """Rows with density below 10**min_log_density are hidden (-8: show all, dead features too)."""
    labels = traitlets.Dict({}).tag(sync=True)
    eval_scores = traitlets.Dict({}).tag(sync=True)
    """Per-feature autointerp scores {feature: {'detection': x, 'fuzzing': y}} (balanced accuracy) from
    `stats.meta['evals']`, written by `saekit.evals.autointerp`; the 'autointerp' column shows them."""
    _dense_threshold = traitlets.Float(DENSE_DENSITY).tag(sync=True)
    """Density above which a feature is flagged dense (`saekit.features.DENSE_DENSITY`), for the tooltip."""
    _numeric = traitlets.Bytes(b"").tag(sync=True)
    _text = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, stats: FeatureStats, **kwargs: Any) -> None:
        if not isinstance(stats, FeatureStats):
            raise WidgetError(f"FeatureTable takes FeatureStats, got {type(stats).__name__}")
        _check_sort(kwargs.get("sort_by", "score"))
        super().__init__(**kwargs)
        self.stats = stats
        F = stats.n_features
        rank = np.empty(F, dtype=np.float64)
        rank[np.asarray(stats.order(), dtype=np.int64)] = np.arange(F)
        cols = np.stack([stats.density.numpy(), stats.mean_act.numpy(), stats.max_act.numpy(), stats.score().numpy(),
                         rank, stats.is_dense().numpy()]).astype("<f4")
        self._numeric = cols.tobytes()  # [len(NUMERIC), F] row-major
        self._text = [" | ".join(_shown(t) for t in stats.peak_tokens(f, 3)) for f in range(F)]
        self.labels = {str(k): v for k, v in stats.labels.items()}
        self.eval_scores = eval_scores(stats)

    def order(self) -> list[int]:
        """Features in the table's current sort order and filter (what the front end shows)."""
        df = self.stats.table(sort_by="feature")
        df = df[df["density"] >= (10.0 ** self.min_log_density if self.min_log_density > -8 else -1)]
        q = self.query.strip().lower()
        if q.lstrip("#").isdigit():
            df = df[df.index == int(q.lstrip("#"))]
        elif q:
            df = df[df["top_tokens"].str.lower().str.contains(q, regex=False) | df["label"].str.lower().str.contains(q, regex=False)]
        if self.sort_by == "autointerp":
            det = {int(f): v.get("detection", -1.0) for f, v in self.eval_scores.items()}
            return sorted(df.index.astype(int), key=lambda f: det.get(f, -1.0), reverse=self.descending)
        if self.sort_by == "score":
            shown = set(df.index)
            return [f for f in self.stats.order("score", descending=self.descending) if f in shown]
        df = df.sort_index(ascending=not self.descending) if self.sort_by == "feature" else df.sort_values(self.sort_by, ascending=not self.descending, kind="stable")
        return [int(f) for f in df.index]

    def _repr_args(self) -> str:
        return f"n_features={self.stats.n_features}, selected={self.selected}, sort_by={self.sort_by!r}"


class FeatureBrowser(ipywidgets.VBox):
    """`FeatureBrowser(stats)`: a `FeatureTable` whose selected row opens in a `FeatureDashboard`.

    `browser.table.selected` and `browser.dashboard.feature` are the observable state; labels edited in
    the dashboard show up in the table and are saved with the statistics.
    """

    def __init__(self, stats: FeatureStats, *, selected: int | None = None, sort_by: str = "score",
                 query: str = "", min_log_density: float = -8.0) -> None:
        if not isinstance(stats, FeatureStats):
            raise WidgetError(f"FeatureBrowser takes FeatureStats, got {type(stats).__name__}")
        _check_sort(sort_by)
        self.stats = stats
        self.table = FeatureTable(stats, sort_by=sort_by, query=query, min_log_density=min_log_density)
        first = selected if selected is not None else (self.table.order() or [0])[0]
        self.table.selected = int(first)
        self.dashboard = FeatureDashboard(stats, feature=int(first))
        super().__init__(children=[self.table, self.dashboard])
        self.table.observe(self._on_select, "selected")
        self.dashboard.observe(self._on_feature, "feature")
        self.dashboard.observe(self._on_label, "label")

    def _on_select(self, change) -> None:
        if change["new"] >= 0 and change["new"] != self.dashboard.feature:
            self.dashboard.feature = change["new"]

    def _on_feature(self, change) -> None:
        if self.table.selected != change["new"]:
            self.table.selected = change["new"]

    def _on_label(self, change) -> None:
        self.table.labels = {str(k): v for k, v in self.stats.labels.items()}

    def __repr__(self) -> str:
        return f"FeatureBrowser(n_features={self.stats.n_features}, selected={self.table.selected})"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The live view's bundle plus a static snapshot (`text/html`) for saved notebooks."""
        return snapshot_bundle(super()._repr_mimebundle_(**kwargs), safe_snapshot(self.snapshot_html))

    def snapshot_html(self, max_views: int = 20) -> str:
        """The static snapshot: `to_html` with dashboards for the first `max_views` rows, in a sandboxed iframe."""
        return snapshot_frame(lambda path: self.to_html(path, max_views=max_views),
                              self.table._snapshot_height + self.dashboard._snapshot_height)

    def to_html(self, path, *, title: str = "saekit features", max_views: int = 200):
        """Standalone HTML: the whole table, and dashboards for the selected feature and the first
        `max_views` rows in the current order (other rows say they are not in the export)."""
        include = [self.dashboard.feature, *self.table.order()[:max_views]]
        dash_state = self.dashboard.static_state()
        dash_state["_views"] = self.dashboard.static_views(include, neighbours=False)
        return export_html(
            path, [self.table, self.dashboard], title=title,
            links=[(self.table, "selected", self.dashboard, "feature"), (self.dashboard, "feature", self.table, "selected")],
            states=[self.table.static_state(), dash_state],
        )


__all__ = ["FeatureBrowser", "FeatureTable"]
