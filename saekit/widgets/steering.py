"""SteeringPanel: pick SAE features, give each a strength (Steer) or a value (Clamp), type a prompt and press
Generate; the kernel runs `saekit.generate` and the widget shows the default and the steered continuation
side by side. The settings and the last outputs are traitlets that Python code can read, set and observe."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import traitlets

from ..errors import WidgetError
from ..interventions import Clamp, Generation, InterventionError, Steer, check_fit, check_sae, feature_indices, generate
from .base import SaeWidget, error_message, short_text

if TYPE_CHECKING:
    from ..lm import Model

MODES = ("steer", "clamp")
UNITS = ("raw", "max_act")
DEFAULT_RANGE = {"raw": 100.0, "max_act": 10.0}
"""The sliders' span when `max_strength` is not given: raw units, or 10x the feature's max activation
(Templeton et al. 2024 clamped features at 5-10x their maximum)."""


def _finite_or_none(values: Any, _widget: Any = None) -> list:
    """Floats for the front end: NaN/inf become null (the JSON the kernel sends cannot carry them)."""
    return [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def _floats_from_json(values: Any, _widget: Any = None) -> list:
    return [float("nan") if v is None else float(v) for v in values]


def selection_source(obj: Any) -> tuple[Any, str] | None:
    """(widget, trait name) holding the selected feature of a FeatureBrowser / FeatureTable / FeatureDashboard."""
    if hasattr(obj, "table") and obj.table.has_trait("selected"):  # FeatureBrowser
        return obj.table, "selected"
    if isinstance(obj, traitlets.HasTraits):
        if obj.has_trait("selected"):  # FeatureTable
            return obj, "selected"
        if obj.has_trait("feature"):  # FeatureDashboard
            return obj, "feature"
    return None


def check_model_sae(model: Model, sae: Any, who: str) -> None:
    """Raise, naming `who`, unless `model` is a saekit model and `sae` a saekit SAE that fits it."""
    if not (hasattr(model, "tokenizer") and hasattr(model, "encode_prompt") and hasattr(model, "generate")):
        raise WidgetError(f"{who} needs a saekit model (saekit.load_model(...)), got {type(model).__name__}")
    check_sae(sae, who)
    try:
        check_fit(model, sae)
    except InterventionError as e:
        raise InterventionError(f"{who}: {e}") from None


class FeaturePicker:
    """Mixin of the panels that act on chosen SAE features (`SteeringPanel`, `AblationPanel`).

    Their `features` come as indices, or as a `FeatureBrowser` / `FeatureTable` / `FeatureDashboard` whose
    selected feature joins the panel each time it changes (`unlink()` stops that). A panel has `prompt`,
    `mode`, `features`, `_busy` and a read-only `error` trait: `_attempt` runs the panel's action and
    `_show_check` a settings check, each putting a failure into `error`.
    """

    _source: tuple[Any, str] | None = None

    def _initial_features(self, sae: Any, features: Any, who: str) -> list[int]:
        if features is None:
            return []
        src = selection_source(features)
        if src is not None:
            stats = getattr(features, "stats", None)
            n = getattr(stats, "n_features", None)
            if n is not None and n != sae.n_latents:
                raise InterventionError(
                    f"{who}: the feature browser shows {n} features but the SAE has {sae.n_latents} latents: "
                    f"pass the browser of this SAE's statistics"
                )
            self._source = src
            f = int(getattr(*src))
            return [f] if f >= 0 else []
        return list(feature_indices(sae, features, who))

    def _link_source(self, on_pick: Callable[[int], None]) -> None:
        if self._source is None:
            return
        widget, name = self._source

        def handler(change: dict) -> None:
            if change["new"] is not None and int(change["new"]) >= 0:
                on_pick(int(change["new"]))

        self._source_handler = handler
        widget.observe(handler, name)

    def unlink(self) -> None:
        """Stop following the feature browser's selection."""
        if self._source is not None and getattr(self, "_source_handler", None) is not None:
            widget, name = self._source
            widget.unobserve(self._source_handler, name)
            self._source_handler = None

    def close(self) -> None:
        self.unlink()
        super().close()  # type: ignore[misc]

    def _attempt(self, action: Callable[[], Any]) -> Any:
        """Run `action` with `_busy` set: its result, or None with its failure in `error` (a bad setting
        must not break the view)."""
        self._busy = True
        try:
            return action()
        except Exception as e:
            self.set_trait("error", error_message(e))
            return None
        finally:
            self._busy = False

    def _show_check(self, check: Callable[[], Any]) -> None:
        """Run a settings check: its failure goes to the `error` trait, success clears it."""
        try:
            check()
        except Exception as e:
            self.set_trait("error", error_message(e))
        else:
            self.set_trait("error", "")

    def _repr_args(self) -> str:
        return f"mode={self.mode!r}, features={list(self.features)}, prompt={short_text(self.prompt)}"


class SteeringPanel(FeaturePicker, SaeWidget):
    """`SteeringPanel(model, sae, features=None, *, prompt="", mode="steer")`: steer generation with SAE features.

    `features` is a list of feature indices, or a `FeatureBrowser` / `FeatureTable` / `FeatureDashboard` whose
    selected feature joins the panel each time it changes. Each feature gets a slider: in mode "steer" its
    strength s adds `s * W_dec[f]` at the SAE's hook point (`Steer`), in mode "clamp" it holds the feature's
    activation at that value (`Clamp`, on every position or, with `where='active'`, only where it fires).
    With `stats` (the SAE's FeatureStats) strengths are multiples of each feature's max activation
    (`unit='max_act'`, sliders -10..10); without, raw activation units (sliders -100..100). Generate (or `panel.generate()`) runs `saekit.generate` (greedy unless
    `do_sample=True`; sampling is seeded by `seed`). Read `default_text`, `steered_text`, `last_settings`
    and `error`; `panel.generation` is the last `Generation`.

        panel = SteeringPanel(model, sae, [123, 456], stats=stats, prompt="The weather today is", strengths=[4, 0])
        panel                          # move a slider, press Generate; or from Python:
        panel.strengths = [4, 1]       # x max activation; assign a new list (in-place edits do not reach the view)
        panel.generate()               # -> Generation(prompt=..., default=..., steered=...)
        panel.steered_text, panel.last_settings

        browser = FeatureBrowser(stats)
        SteeringPanel(model, sae, browser, default_strength=100)   # rows clicked in the browser join the panel

    Errors (a feature out of range, a NaN strength, max_new_tokens=0, an empty prompt) are shown in the
    widget and kept in `error`; `generate()` then returns None.
    """

    _asset_js = "steering_panel.js"
    _asset_css = "steering_panel.css"
    _snapshot_height = 460

    prompt = traitlets.Unicode("").tag(sync=True)
    """The prompt to continue."""
    mode = traitlets.Enum(MODES, "steer").tag(sync=True)
    """'steer' (add strength * decoder direction) or 'clamp' (hold the feature at a value)."""
    features = traitlets.List(traitlets.Int()).tag(sync=True)
    """The chosen features."""
    strengths = traitlets.List(traitlets.Float(allow_none=True)).tag(
        sync=True, to_json=_finite_or_none, from_json=_floats_from_json
    )
    """One strength (steer) or value (clamp) per feature, in the order of `features`."""
    unit = traitlets.Enum(UNITS, "raw").tag(sync=True)
    """'raw' (activation units) or 'max_act' (multiples of each feature's max activation; needs `stats`).
    The default is 'max_act' when the panel is given statistics."""
    where = traitlets.Enum(("all", "active"), "all").tag(sync=True)
    """Clamp on 'all' positions (Scaling Monosemanticity) or only where the feature is 'active'."""
    max_strength = traitlets.Float(100.0).tag(sync=True)
    """The sliders span -max_strength..max_strength (0..max_strength when clamping); by default 100 in raw
    units and 10 in 'max_act' units, following `unit` until set by hand."""
    default_strength = traitlets.Float(0.0).tag(sync=True)
    """Strength given to a newly added feature."""
    max_new_tokens = traitlets.Int(20).tag(sync=True)
    do_sample = traitlets.Bool(False).tag(sync=True)
    """False: greedy decoding; True: sampling, seeded by `seed`."""
    seed = traitlets.Int(0).tag(sync=True)
    default_text = traitlets.Unicode("", read_only=True).tag(sync=True)
    """The last continuation without edits."""
    steered_text = traitlets.Unicode("", read_only=True).tag(sync=True)
    """The last continuation with the edits."""
    last_settings = traitlets.Dict({}, read_only=True).tag(sync=True)
    """Settings of the last generation: prompt, mode, features, strengths, max_new_tokens, do_sample, seed, edits."""
    error = traitlets.Unicode("", read_only=True).tag(sync=True)
    """Why the last generation (or the current settings) cannot run; '' when all is well."""
    _generate_clicks = traitlets.Int(0).tag(sync=True)
    """The front end's Generate button increments this."""
    _busy = traitlets.Bool(False).tag(sync=True)
    _n_latents = traitlets.Int(0).tag(sync=True)

    def __init__(self, model: Model, sae: Any, features: Any = None, *, stats: Any = None, **kwargs: Any) -> None:
        check_model_sae(model, sae, "SteeringPanel")
        self._model, self._sae = model, sae
        self._stats = stats if stats is not None else getattr(features, "stats", None)
        kwargs.setdefault("unit", "max_act" if self._stats is not None else "raw")
        if kwargs["unit"] == "max_act" and self._stats is None:
            raise WidgetError(
                "SteeringPanel(unit='max_act') needs the features' maximum activations: pass stats=feature_stats(model, sae) "
                "(or a FeatureBrowser of them as features), or use unit='raw'"
            )
        self._range_by_hand = "max_strength" in kwargs
        kwargs.setdefault("max_strength", DEFAULT_RANGE[kwargs["unit"]])
        self.generation: Generation | None = None
        feats = self._initial_features(sae, features, "SteeringPanel")
        strengths = kwargs.pop("strengths", None)
        default = float(kwargs.get("default_strength", 0.0))
        if strengths is None:
            strengths = [default] * len(feats)
        elif isinstance(strengths, dict):
            strengths = [float(strengths.get(f, default)) for f in feats]
        elif isinstance(strengths, (int, float)):
            strengths = [float(strengths)] * len(feats)
        else:
            strengths = [float(s) for s in strengths]
        if len(strengths) != len(feats):
            raise WidgetError(f"SteeringPanel: {len(feats)} features but {len(strengths)} strengths: give one per feature")
        super().__init__(features=feats, strengths=strengths, **kwargs)
        self._n_latents = int(sae.n_latents)
        self.observe(self._on_click, "_generate_clicks")
        self.observe(self._on_settings, ["features", "strengths", "mode", "max_new_tokens", "unit", "where"])
        self._auto_range = False
        self.observe(self._on_unit, "unit")
        self.observe(self._on_range, "max_strength")
        self._link_source(self.add_feature)

    # -- Python API -------------------------------------------------------------------------------

    def add_feature(self, feature: int, strength: float | None = None) -> None:
        """Add a feature (no-op when present) with `strength` (default: `default_strength`)."""
        f = int(feature)
        if f in self.features:
            return
        s = self.default_strength if strength is None else float(strength)
        with self.hold_trait_notifications(), self.hold_sync():
            self.strengths = [*self.strengths, s]
            self.features = [*self.features, f]

    def remove_feature(self, feature: int) -> None:
        if int(feature) in self.features:
            i = self.features.index(int(feature))
            with self.hold_trait_notifications(), self.hold_sync():
                self.strengths = self.strengths[:i] + self.strengths[i + 1 :]
                self.features = self.features[:i] + self.features[i + 1 :]

    def edits(self) -> list:
        """The edits the current settings stand for (`Steer`s or one `Clamp`); raises when they are invalid."""
        feats = list(feature_indices(self._sae, self.features, "SteeringPanel"))
        if len(self.strengths) != len(feats):
            raise InterventionError(f"SteeringPanel: {len(feats)} features but {len(self.strengths)} strengths")
        stats = self._stats if self.unit == "max_act" else None
        if self.mode == "clamp":
            return [Clamp(self._sae, dict(zip(feats, self.strengths)), where=self.where, unit=self.unit, stats=stats)]
        return [Steer(None, (self._sae, f), s, unit=self.unit, stats=stats) for f, s in zip(feats, self.strengths)]

    def generate(self) -> Generation | None:
        """Run the current settings (what the Generate button does); None (and `error` set) when they fail."""
        settings = {
            "prompt": self.prompt, "mode": self.mode, "unit": self.unit, "where": self.where, "features": list(self.features),
            "strengths": _finite_or_none(self.strengths), "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample, "seed": self.seed,
        }
        gen = self._attempt(lambda: generate(
            self._model, self.prompt, self.edits(), max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, seed=self.seed
        ))
        if gen is None:
            return None
        self.generation = gen
        with self.hold_sync():
            self.set_trait("error", "")
            self.set_trait("last_settings", {**settings, "edits": gen.edits})
            self.set_trait("default_text", gen.default)
            self.set_trait("steered_text", gen.steered)
        return gen

    # -- plumbing ---------------------------------------------------------------------------------

    def _on_click(self, change: dict) -> None:
        self.generate()

    def _on_unit(self, change: dict) -> None:
        if change["new"] == "max_act" and self._stats is None:
            self.set_trait("error", "unit 'max_act' needs statistics: create the panel with stats=feature_stats(model, sae)")
        if not self._range_by_hand:
            self._auto_range = True
            try:
                self.max_strength = DEFAULT_RANGE[change["new"]]
            finally:
                self._auto_range = False

    def _on_range(self, change: dict) -> None:
        if not self._auto_range:
            self._range_by_hand = True

    def _on_settings(self, change: dict) -> None:
        self._show_check(self._check_settings)

    def _check_settings(self) -> None:
        if self.features:
            self.edits()
        if self.max_new_tokens <= 0:
            raise InterventionError(f"max_new_tokens must be a positive int, got {self.max_new_tokens}")


__all__ = ["FeaturePicker", "SteeringPanel", "check_model_sae", "selection_source"]
