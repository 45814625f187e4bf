"""FeatureDashboard: one feature's statistics, contexts, logit effects and neighbours (a thin view of
`FeatureStats.view`): the dense flag and the interpretability score (with its terms) in the header, an
activation histogram with labelled axes, each context's source document when known, and a caveat on the
logit effects (direct logit-lens effects, weakly meaningful at middle layers). Clicking a neighbour sets
`feature`; clicking a token sets `clicked_token` and navigates to the feature whose top contexts most
often peak on that token; editing the label writes it into the statistics (and to disk when they live in
a folder)."""

from __future__ import annotations

from typing import Any, Iterable

import traitlets

from ..errors import WidgetError
from ..features import FeatureError, FeatureStats, features_for_tokens
from .base import SaeWidget, export_html


class FeatureDashboard(SaeWidget):
    """`FeatureDashboard(stats, feature=0)`: observe `feature`, `label` and `clicked_token` from Python."""

    _asset_js = "feature_dashboard.js"
    _asset_css = "feature_dashboard.css"
    _snapshot_height = 560

    feature = traitlets.Int(0).tag(sync=True)
    """The feature shown; set it to navigate."""
    label = traitlets.Unicode("").tag(sync=True)
    """The shown feature's label; editing it in the widget saves it with the statistics."""
    clicked_token = traitlets.Unicode("").tag(sync=True)
    """Text of the token last clicked in a context."""
    _views = traitlets.Dict({}).tag(sync=True)

    def __init__(self, stats: FeatureStats, **kwargs: Any) -> None:
        if not isinstance(stats, FeatureStats):
            raise WidgetError(
                f"FeatureDashboard takes FeatureStats (from saekit.features.feature_stats or FeatureStats.load), "
                f"got {type(stats).__name__}"
            )
        self.stats = stats
        super().__init__(**kwargs)
        stats._check(self.feature)
        self._show(self.feature)
        self.observe(self._on_feature, "feature")
        self.observe(self._on_label, "label")
        self.observe(self._on_token, "clicked_token")

    # -- Python side of the two-way state -------------------------------------------------------

    @traitlets.validate("feature")
    def _valid_feature(self, proposal):
        f = int(proposal["value"])
        if hasattr(self, "stats"):
            self.stats._check(f)
        return f

    def _show(self, f: int) -> None:
        self._views = {str(f): self.stats.view(f)}
        with self.hold_trait_notifications():
            self.set_trait("label", self.stats.labels.get(f, ""))

    def _on_feature(self, change) -> None:
        self._show(change["new"])

    def _on_label(self, change) -> None:
        f = self.feature
        if self.stats.labels.get(f, "") != change["new"].strip():
            self.stats.set_label(f, change["new"])
            view = dict(self._views.get(str(f), {}), label=self.stats.labels.get(f, ""))
            self._views = {str(f): view}

    def _on_token(self, change) -> None:
        tok = change["new"]
        if not tok.strip():
            return
        found = [g for g in features_for_tokens(self.stats, [tok], top=5).index if g != self.feature]
        if found:
            self.feature = int(found[0])

    # -- display --------------------------------------------------------------------------------

    def _repr_args(self) -> str:
        return f"feature={self.feature}, n_features={self.stats.n_features}"

    def to_html(self, path, *, title: str | None = None, include: Iterable[int] | None = None, neighbours: bool = True):
        """Standalone HTML of this dashboard. The current feature is included, plus its neighbours and
        co-occurring features (`neighbours=True`) and any `include`d ones, so clicks keep working offline."""
        state = self.static_state()
        state["_views"] = self.static_views(include, neighbours)
        return export_html(path, [self], title=title or f"saekit feature {self.feature}", states=[state])

    def static_views(self, include: Iterable[int] | None = None, neighbours: bool = True) -> dict[str, Any]:
        f = self.feature
        wanted = [f, *(include or [])]
        if neighbours:
            wanted += [g for g, _ in self.stats.neighbours(f)] + [g for g, _ in self.stats.cooccurring(f)]
        return {str(g): self.stats.view(g) for g in dict.fromkeys(int(x) for x in wanted)}


__all__ = ["FeatureDashboard", "FeatureError"]
