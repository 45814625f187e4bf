"""PromptInspector: type or pass text; the kernel runs model + SAE (`prompt_activations`) and the widget
colours the tokens by `feature` and lists the features of `selected_token`. Both are traitlets that
Python code can read, set and observe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import traitlets

from ..features import FeatureStats, PromptActivations, prompt_activations
from .base import SaeWidget, error_message

if TYPE_CHECKING:
    from ..lm import Model


class PromptInspector(SaeWidget):
    """`PromptInspector(model, sae, text, stats=None, feature=-1)`; `feature=-1` picks the prompt's strongest."""

    _asset_js = "prompt_inspector.js"
    _asset_css = "prompt_inspector.css"
    _snapshot_height = 360

    text = traitlets.Unicode("").tag(sync=True)
    """The prompt; setting it (from Python or the widget's Run button) reruns model and SAE."""
    feature = traitlets.Int(-1).tag(sync=True)
    """The feature that colours the tokens."""
    selected_token = traitlets.Int(-1).tag(sync=True)
    """Index of the clicked token (-1: none)."""
    _tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    _features = traitlets.List().tag(sync=True)
    _values = traitlets.List().tag(sync=True)
    _info = traitlets.Dict({}).tag(sync=True)
    _error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, model: Model, sae, text: str = "", *, stats: FeatureStats | None = None, max_features: int = 32, **kwargs: Any) -> None:
        self._model, self._sae, self.stats, self._max_features = model, sae, stats, max_features
        self.activations: PromptActivations | None = None
        super().__init__(text=text, **kwargs)
        self._run()
        self.observe(lambda _: self._run(), "text")

    def _run(self) -> None:
        if not self.text.strip():
            self.activations = None
            self._tokens, self._features, self._values, self._error = [], [], [], ""
            return
        try:
            pa = prompt_activations(self._model, self._sae, self.text, max_features=self._max_features)
        except Exception as e:  # shown in the widget: a bad prompt must not break the view
            self._error = error_message(e)
            return
        self.activations = pa
        info: dict[str, str] = {}
        if self.stats is not None:
            for f in sorted({f for fs in pa.features for f in fs}):
                label = self.stats.labels.get(f, "")
                info[str(f)] = label or " | ".join(self.stats.peak_tokens(f, 3))
        with self.hold_trait_notifications():
            self._error = ""
            self._info = info
            self._features, self._values = pa.features, pa.values
            if self.selected_token >= len(pa.tokens):
                self.selected_token = -1
            if self.feature < 0 and pa.features:
                best = max(((v[0], fs[0]) for fs, v in zip(pa.features, pa.values) if fs), default=(0, 0))
                self.feature = int(best[1])
            self._tokens = pa.tokens

    def _repr_args(self) -> str:
        return f"n_tokens={len(self._tokens)}, feature={self.feature}, selected_token={self.selected_token}"


__all__ = ["PromptInspector"]
