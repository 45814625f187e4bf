"""SplitTree: pick a feature of the smallest SAE and see what it splits into in the larger ones (a thin view of
`saekit.features.split_tree`'s `Splits`), each descendant with its top tokens and its similarity to its
parent; clicking a node sets `opened`, which `with_dashboard()` shows in a FeatureDashboard of that SAE."""

from __future__ import annotations

from typing import Any, Sequence

import traitlets

from ..errors import WidgetError
from ..features import FeatureStats, Splits
from .base import SaeWidget
from .dashboard import FeatureDashboard


def _shown(token: str) -> str:
    return token if token.strip() else token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def _nodes(node: dict[str, Any]):
    yield node["level"], node["feature"]
    for c in node["children"]:
        yield from _nodes(c)


class SplitTree(SaeWidget):
    """`SplitTree(splits, stats=[stats_small, ..., stats_large], root=f)`: observe `root` and `opened`.

    Without stats, `tokens` (per level, one string per feature) labels the nodes; dashboards need stats."""

    _asset_js = "split_tree.js"
    _asset_css = "split_tree.css"
    _snapshot_height = 460

    root = traitlets.Int(0).tag(sync=True)
    """Feature of the smallest SAE whose descendants are shown."""
    opened = traitlets.List(traitlets.Int()).tag(sync=True)
    """[level, feature] of the node last clicked ([] before any): the feature shown by `with_dashboard()`."""
    _widths = traitlets.List(traitlets.Int()).tag(sync=True)
    _forest = traitlets.Dict({}).tag(sync=True)
    _roots = traitlets.List(traitlets.Int()).tag(sync=True)
    _tokens = traitlets.Dict({}).tag(sync=True)

    def __init__(
        self,
        splits: Splits,
        stats: Sequence[FeatureStats] | None = None,
        *,
        tokens: Sequence[Sequence[str]] | None = None,
        roots: Sequence[int] | None = None,
        max_roots: int = 300,
        **kwargs: Any,
    ) -> None:
        if not isinstance(splits, Splits):
            raise WidgetError(f"SplitTree takes the Splits of saekit.features.split_tree, got {type(splits).__name__}")
        if stats is not None and [s.n_features for s in stats] != list(splits.widths):
            raise WidgetError(f"stats must describe each level in order, widths {list(splits.widths)}; got {[s.n_features for s in stats]}")
        self.splits = splits
        self.stats = list(stats) if stats is not None else None
        if roots is None:  # the roots that split the most first
            counts = splits.edges[splits.edges.level == 0].groupby("parent").size().sort_values(ascending=False, kind="stable")
            roots = [int(f) for f in counts.index[:max_roots]]
        roots = [int(f) for f in roots]
        if not roots:
            raise WidgetError("this tree has no matched feature: lower split_tree's threshold")
        kwargs.setdefault("root", roots[0])
        super().__init__(**kwargs)
        forest = {str(f): splits.descendants(f) for f in dict.fromkeys(roots + [self.root])}
        self._widths = list(splits.widths)
        self._roots = roots
        token_map: dict[str, str] = {}
        self._given_tokens = tokens
        for node in forest.values():
            token_map.update(self._node_tokens(node))
        self._tokens = token_map
        self._forest = forest
        self._dashboards: dict[int, FeatureDashboard] = {}
        self.observe(self._on_root, "root")

    def _node_tokens(self, node: dict[str, Any]) -> dict[str, str]:
        """{'level:feature': top tokens} of a subtree, from the stats or the `tokens` given."""
        out = {}
        for lvl, f in _nodes(node):
            if self.stats is not None:
                out[f"{lvl}:{f}"] = " | ".join(_shown(t) for t in self.stats[lvl].peak_tokens(f, 3))
            elif self._given_tokens is not None:
                out[f"{lvl}:{f}"] = str(self._given_tokens[lvl][f])
        return out

    def _on_root(self, change) -> None:
        key = str(change["new"])
        if key not in self._forest:
            node = self.splits.descendants(change["new"])
            self._tokens = {**self._tokens, **self._node_tokens(node)}
            self._forest = {**self._forest, key: node}

    def dashboard(self, level: int, feature: int) -> FeatureDashboard:
        """A FeatureDashboard of level `level`'s SAE showing `feature` (one dashboard per level, reused)."""
        if self.stats is None:
            raise WidgetError("SplitTree was built without stats: pass stats=[...] (one FeatureStats per level) to open dashboards")
        d = self._dashboards.get(level)
        if d is None:
            d = self._dashboards[level] = FeatureDashboard(self.stats[level], feature=feature)
        else:
            d.feature = feature
        return d

    def with_dashboard(self):
        """This tree above a dashboard that shows whichever node is clicked (an ipywidgets VBox)."""
        import ipywidgets

        box = ipywidgets.VBox([self])

        def on_open(change) -> None:
            if len(change["new"]) == 2:
                box.children = [self, self.dashboard(*change["new"])]

        self.observe(on_open, "opened")
        return box

    def _repr_args(self) -> str:
        return f"widths={list(self.splits.widths)}, root={self.root}"


__all__ = ["SplitTree"]
