"""FeatureMap: an SAE's decoder directions on a 2-D map (`saekit.features.map_coordinates`), drawn on a canvas
(coordinates and colours as packed float32 bytes, so 16k+ points stay smooth), coloured by density, a
label per feature or any score; hover shows a feature's top tokens; click and lasso select features into
`selected`, which `link_browser` passes to a FeatureBrowser."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import traitlets

from ..errors import WidgetError
from ..features import FeatureStats, map_coordinates
from .base import SaeWidget


def _shown(token: str) -> str:
    return token if token.strip() else token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


class FeatureMap(SaeWidget):
    """`FeatureMap(xy, color=..., tokens=...)` or `FeatureMap.of(sae, stats, color="density")`.

    Observe `selected` (the selected features, sorted) and `hovered` (-1: none) from Python.
    """

    _asset_js = "feature_map.js"
    _asset_css = "feature_map.css"
    _snapshot_height = 560

    selected = traitlets.List(traitlets.Int()).tag(sync=True)
    """Features selected by click or lasso, sorted."""
    hovered = traitlets.Int(-1).tag(sync=True)
    """Feature under the pointer, -1 when none."""
    color_by = traitlets.Unicode("").tag(sync=True)
    """What the colours show (the legend's title)."""
    _xy = traitlets.Bytes(b"").tag(sync=True)
    _color = traitlets.Bytes(b"").tag(sync=True)
    _categories = traitlets.List(traitlets.Unicode()).tag(sync=True)
    _tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(
        self,
        xy: Any,
        *,
        color: Any = None,
        categories: Sequence[str] | None = None,
        tokens: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        xy_F2 = np.asarray(xy.detach().cpu() if hasattr(xy, "detach") else xy, dtype=np.float32)
        if xy_F2.ndim != 2 or xy_F2.shape[1] != 2 or not np.all(np.isfinite(xy_F2)):
            raise WidgetError(f"FeatureMap takes finite coordinates [F, 2] (saekit.features.map_coordinates), got shape {xy_F2.shape}")
        F = xy_F2.shape[0]
        if color is None:
            c = np.full(F, np.nan, dtype=np.float32)
        else:
            c = np.asarray(color.detach().cpu() if hasattr(color, "detach") else color, dtype=np.float32).reshape(-1)
        if c.shape[0] != F:
            raise WidgetError(f"color has {c.shape[0]} values for {F} features: pass one per feature")
        cats = list(categories or [])
        if cats:
            ok = np.isnan(c) | (c == -1) | ((c >= 0) & (c < len(cats)) & (c == np.round(c)))
            if not ok.all():
                raise WidgetError(f"with categories, color holds category indices 0..{len(cats) - 1} (or -1 for none)")
        toks = list(tokens) if tokens is not None else [""] * F
        if len(toks) != F:
            raise WidgetError(f"tokens has {len(toks)} entries for {F} features")
        super().__init__(**kwargs)
        self._xy = xy_F2.astype("<f4").tobytes()  # [F, 2] row-major
        self._color = c.astype("<f4").tobytes()
        self._categories = [str(x) for x in cats]
        self._tokens = [str(t) for t in toks]

    @classmethod
    def of(
        cls,
        sae: Any,
        stats: FeatureStats | None = None,
        *,
        color: Any = "density",
        categories: Sequence[str] | None = None,
        method: str = "pca",
        seed: int = 0,
        **kwargs: Any,
    ) -> "FeatureMap":
        """The map of `sae`'s decoder directions. `color`: 'density' (log10, from `stats`), a label name
        shown by category ('label': the stats' labels), or one number / category index per feature."""
        xy = map_coordinates(sae, method=method, seed=seed)
        F = xy.shape[0]
        tokens = None
        if stats is not None:
            if stats.n_features != F:
                raise WidgetError(f"stats describe {stats.n_features} features but the SAE has {F}")
            tokens = [" | ".join(_shown(t) for t in stats.peak_tokens(f, 3)) for f in range(F)]
        name = kwargs.pop("color_by", None)
        if isinstance(color, str):
            if stats is None:
                raise WidgetError(f"color={color!r} needs the SAE's FeatureStats: FeatureMap.of(sae, stats)")
            if color == "density":
                d = stats.density.double().numpy()
                color, name = np.where(d > 0, np.log10(np.maximum(d, 1e-12)), np.nan), name or "log10 density"
            elif color == "label":
                names = sorted(set(stats.labels.values()))
                color = [names.index(stats.labels[f]) if f in stats.labels else -1 for f in range(F)]
                categories, name = names, name or "label"
            else:
                raise WidgetError(f"color={color!r}: pass 'density', 'label', or one value per feature")
        return cls(xy, color=color, categories=categories, tokens=tokens, color_by=name or "", **kwargs)

    @property
    def n_features(self) -> int:
        return len(self._xy) // 8

    def coordinates(self) -> np.ndarray:
        """The map's coordinates [F, 2]."""
        return np.frombuffer(self._xy, dtype="<f4").reshape(-1, 2).copy()

    def link_browser(self, browser: Any) -> "FeatureMap":
        """Show the most recently selected feature of the map in `browser` (a FeatureBrowser)."""
        def on_select(change) -> None:
            new = [f for f in change["new"] if f not in (change["old"] or [])] or change["new"]
            if new:
                browser.table.selected = int(new[-1])

        self.observe(on_select, "selected")
        return self

    def _repr_args(self) -> str:
        return f"n_features={self.n_features}, color_by={self.color_by!r}, selected={len(self.selected)}"


__all__ = ["FeatureMap"]
