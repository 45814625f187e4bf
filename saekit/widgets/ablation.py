"""AblationPanel: ablate chosen SAE features (to zero or to their mean) on a prompt and show, per position,
the next tokens whose probability moved most (`saekit.measure`). Prompt, features and mode are two-way
traitlets; the results are plain data in `results`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import traitlets

from ..errors import WidgetError
from ..interventions import Ablate, Effects, feature_indices, feature_means, measure
from .base import SaeWidget
from .steering import FeaturePicker, check_model_sae

if TYPE_CHECKING:
    from ..lm import Model


class AblationPanel(FeaturePicker, SaeWidget):
    """`AblationPanel(model, sae, features=None, *, prompt="", mode="zero")`: what ablating features changes.

    `features` is a list of feature indices, or a `FeatureBrowser` / `FeatureTable` / `FeatureDashboard` whose
    selected feature joins the panel each time it changes. Run (or `panel.run()`) applies
    `Ablate(sae, features, mode)` (error term kept: the model is exact but for these features) and measures
    every position's next-token distribution, clean vs ablated. Mode "mean" uses `means=` (a tensor
    [n_latents] or {feature: mean}), else `saekit.interventions.feature_means(model, sae)`, computed once.

        panel = AblationPanel(model, sae, [123], prompt="def add(a, b):\\n    return a + b")
        panel                       # press Run
        panel.run()                 # or from Python -> Effects
        panel.results["top_down"][-1]   # [[token, p_clean, p_ablated], ...] after the last token

    Errors are shown in the widget and kept in `error`; `run()` then returns None.
    """

    _asset_js = "ablation_panel.js"
    _asset_css = "ablation_panel.css"
    _snapshot_height = 420

    prompt = traitlets.Unicode("").tag(sync=True)
    """The text whose next-token predictions are measured."""
    features = traitlets.List(traitlets.Int()).tag(sync=True)
    """The features to ablate."""
    mode = traitlets.Enum(("zero", "mean"), "zero").tag(sync=True)
    """'zero' (activation -> 0) or 'mean' (activation -> its mean)."""
    top = traitlets.Int(5).tag(sync=True)
    """How many most-risen and most-fallen tokens to keep per position."""
    results = traitlets.Dict({}, read_only=True).tag(sync=True)
    """The last run, as plain data: tokens, top_up / top_down (per position [[token, p_clean, p_ablated], ...]),
    loss_clean, loss_edited, edits; {} before the first run."""
    last_settings = traitlets.Dict({}, read_only=True).tag(sync=True)
    """Settings of the last run: prompt, features, mode, top."""
    error = traitlets.Unicode("", read_only=True).tag(sync=True)
    """Why the last run (or the current settings) cannot run; '' when all is well."""
    _run_clicks = traitlets.Int(0).tag(sync=True)
    """The front end's Run button increments this."""
    _busy = traitlets.Bool(False).tag(sync=True)
    _n_latents = traitlets.Int(0).tag(sync=True)

    def __init__(self, model: Model, sae: Any, features: Any = None, *, means: Any = None, **kwargs: Any) -> None:
        check_model_sae(model, sae, "AblationPanel")
        self._model, self._sae, self._means = model, sae, means
        self.effects: Effects | None = None
        feats = self._initial_features(sae, features, "AblationPanel")
        super().__init__(features=feats, **kwargs)
        self._n_latents = int(sae.n_latents)
        self.observe(lambda _: self.run(), "_run_clicks")
        self.observe(self._on_settings, ["features", "top"])
        self._link_source(self.add_feature)

    def add_feature(self, feature: int) -> None:
        if int(feature) not in self.features:
            self.features = [*self.features, int(feature)]

    def remove_feature(self, feature: int) -> None:
        self.features = [f for f in self.features if f != int(feature)]

    def edits(self) -> Ablate:
        """The edit the current settings stand for; raises when they are invalid."""
        feats = feature_indices(self._sae, self.features, "AblationPanel")
        if self.mode == "mean":
            if self._means is None:
                self._means = feature_means(self._model, self._sae)
            return Ablate(self._sae, feats, mode="mean", means=self._means)
        return Ablate(self._sae, feats)

    def run(self) -> Effects | None:
        """Ablate and measure (what the Run button does); None (and `error` set) when it fails."""
        settings = {"prompt": self.prompt, "features": list(self.features), "mode": self.mode, "top": self.top}
        eff = self._attempt(lambda: measure(self._model, self.prompt, self.edits(), top=self.top))
        if eff is None:
            return None
        self.effects = eff
        rows = lambda lst: [[[tok, pc, pe] for tok, pc, pe in pos] for pos in lst]  # noqa: E731
        with self.hold_sync():
            self.set_trait("error", "")
            self.set_trait("last_settings", settings)
            self.set_trait("results", {
                "prompt": eff.text, "tokens": list(eff.tokens), "top_up": rows(eff.top_up), "top_down": rows(eff.top_down),
                "loss_clean": eff.loss_clean, "loss_edited": eff.loss_edited, "edits": eff.edits,
            })
        return eff

    def _on_settings(self, change: dict) -> None:
        self._show_check(self._check_settings)

    def _check_settings(self) -> None:
        if self.features:
            feature_indices(self._sae, self.features, "AblationPanel")
        if self.top < 0:
            raise WidgetError(f"top must be a non-negative int, got {self.top}")


__all__ = ["AblationPanel"]
