"""Interventions as plain data, and the measurements of what they do.

Edits (each plans itself as plain data, `specs(model, edits)`; the door, `saekit.lm`, runs the plan
inside one trace, locally or on NDIF):

    Splice(sae, error_term)          replace x at the SAE's hook point by x_hat (error_term=False), or keep
                                     the error term x - x_hat (error_term=True: the exact model, on which
                                     feature edits then act)
    Ablate(sae, features, mode)      set features to 0 ('zero') or to their mean activation ('mean')
    Clamp(sae, {feature: value})     hold features at a value on every position (where='active': only
                                     where they fire); values raw or in multiples of the max activation
    Steer(hookpoint, direction, s)   add s * direction (a vector, or an SAE feature's decoder row), s in
                                     raw units, multiples of the feature's max activation, or of the
                                     activation norm at the hook point (`unit`)

With the error term kept, a feature edit is exact: x' = x + sum_f (target_f - a_f(x)) W_dec[f], so
nothing but the edited features changes. Edits on one SAE at one hook point are merged and encode
once; `Splice(sae, error_term=False)` next to `Ablate(sae, ...)` ablates within the reconstruction.
Edits at one hook point apply in the order given (the edits of one SAE at the place of the first).
Edits act on every prompt position but BOS and padding, and on every generated token. An SAE's encoder
travels as the plain-tensor description its class makes (`Sae.plain_encoder`).

Measurements: `measure` (per-position effects of edits on one text: next-token log-prob changes for
chosen tokens, the tokens whose probability moved most, the loss change), `loss_change` (on many
texts), `generate` (default and edited continuations side by side), `feature_means` (for mean
ablation). Clean and edited runs share one forward pass (nnsight invokes).
"""

from __future__ import annotations

import copy
import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .errors import InterventionError
from .lm.in_trace import encode_latents, encoder_rows

if TYPE_CHECKING:
    from .lm import Model

__all__ = [
    "Splice",
    "Ablate",
    "Clamp",
    "Steer",
    "InterventionError",
    "Effects",
    "LossChange",
    "Generation",
    "compile_edits",
    "check_fit",
    "check_sae",
    "feature_indices",
    "measure",
    "loss_change",
    "generate",
    "feature_means",
    "describe_edits",
    "max_activations",
    "activation_norm",
    "STEER_UNITS",
]

STEER_UNITS = ("raw", "max_act", "resid_norm")
"""What one unit of `Steer.strength` is: raw activation units, the feature's max activation, the activation norm."""
WHERE = ("all", "active")
"""Where a `Clamp` acts: every position, or only where the clamped feature fires."""


# -- validation helpers -----------------------------------------------------------------------------


def check_sae(sae: Any, who: str) -> None:
    """Raise `InterventionError` (naming `who`, the caller) unless `sae` is a saekit SAE."""
    if not all(hasattr(sae, a) for a in ("W_enc", "W_dec", "b_enc", "b_dec", "cfg", "n_latents", "d_in")):
        raise InterventionError(f"{who} needs a saekit SAE (saekit.Sae), got {type(sae).__name__}")


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InterventionError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InterventionError(f"{what} must be finite, got {value!r}: pass a real number such as 4.0")
    return v


def _feature(sae: Any, f: Any, who: str) -> int:
    if isinstance(f, Tensor):
        if f.numel() != 1:
            raise InterventionError(f"{who}: a feature index is one integer, got a tensor of shape {tuple(f.shape)}")
        f = f.item()
    if isinstance(f, bool) or not isinstance(f, (int,)) and not (hasattr(f, "__index__")):
        raise InterventionError(f"{who}: feature indices are integers, got {f!r}")
    f = int(f)
    if not 0 <= f < sae.n_latents:
        raise InterventionError(
            f"{who}: feature {f} is out of range: this SAE has {sae.n_latents} latents (valid indices 0..{sae.n_latents - 1})"
        )
    return f


def feature_indices(sae: Any, features: Any, who: str) -> tuple[int, ...]:
    """`features` (an int, a sequence or a tensor of ints) as a tuple of distinct valid feature indices of
    `sae`; raises `InterventionError` naming `who` (the caller) and the fix otherwise."""
    if isinstance(features, Tensor):
        features = features.reshape(-1).tolist()
    elif isinstance(features, int) or hasattr(features, "__index__") and not isinstance(features, (list, tuple)):
        features = [features]
    feats = tuple(_feature(sae, f, who) for f in features)
    if not feats:
        raise InterventionError(f"{who}: no features given: pass at least one feature index, e.g. features=[123]")
    if len(set(feats)) != len(feats):
        raise InterventionError(f"{who}: feature indices repeat in {list(feats)}: list each feature once")
    return feats


def _sae_label(sae: Any) -> str:
    return f"<{getattr(sae, 'architecture', 'sae')} F={sae.n_latents} @ {sae.cfg.hookpoint}>"


# -- the edits --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Splice:
    """Run the model with the SAE spliced in at its hook point (a transcoder: its prediction from
    `cfg.hookpoint`, the MLP's input, in place of `cfg.target_hookpoint`, the MLP's output)."""

    sae: Any
    """The SAE; it acts at `sae.cfg.hookpoint` (a transcoder reads there and acts at its target)."""
    error_term: bool = False
    """Keep the error term x - x_hat: False runs on the reconstruction alone (the spliced-in model);
    True is the exact model, on which Ablate/Clamp edits of the same SAE then act."""

    def __post_init__(self) -> None:
        check_sae(self.sae, "Splice")
        if not isinstance(self.error_term, bool):
            raise InterventionError(f"Splice.error_term must be True or False, got {self.error_term!r}")

    def specs(self, model: Model, edits: Sequence[Any] | None = None) -> list[tuple[str, dict]]:
        """This edit's plan on `model` as [(hookpoint, spec)] of plain tensors (see `compile_edits`)."""
        return _sae_specs(self, model, edits)

    def __repr__(self) -> str:
        return f"Splice({_sae_label(self.sae)}, error_term={self.error_term})"


@dataclass(frozen=True, eq=False, repr=False)
class Ablate:
    """Ablate SAE features: set their activation to zero or to their mean, on every position."""

    sae: Any
    """The SAE whose features are ablated (at `sae.cfg.hookpoint`)."""
    features: Any
    """Feature index or indices (ints in 0..n_latents-1)."""
    mode: str = "zero"
    """'zero' (activation -> 0) or 'mean' (activation -> its mean, from `means`)."""
    means: Any = None
    """For mode='mean': mean activation per feature, a tensor [n_latents] or {feature: mean}
    (`saekit.interventions.feature_means(model, sae)` computes it)."""
    error_term: bool = True
    """Keep the SAE's error term (exact model except for these features); False edits the reconstruction."""

    def __post_init__(self) -> None:
        check_sae(self.sae, "Ablate")
        object.__setattr__(self, "features", feature_indices(self.sae, self.features, "Ablate"))
        if self.mode not in ("zero", "mean"):
            raise InterventionError(f"Ablate.mode must be 'zero' or 'mean', got {self.mode!r}")
        if self.mode == "mean":
            if self.means is None:
                raise InterventionError(
                    "Ablate(mode='mean') needs means=: pass saekit.interventions.feature_means(model, sae) "
                    "(a tensor [n_latents]) or {feature: mean}"
                )
            object.__setattr__(self, "means", self._mean_values())
        elif self.means is not None:
            raise InterventionError("Ablate.means is only used with mode='mean': drop means= or set mode='mean'")

    def _mean_values(self) -> tuple[float, ...]:
        m = self.means
        if isinstance(m, Mapping):
            missing = [f for f in self.features if f not in m]
            if missing:
                raise InterventionError(f"Ablate: means has no entry for features {missing}")
            vals = [m[f] for f in self.features]
        else:
            t = torch.as_tensor(m).reshape(-1)
            if t.numel() != self.sae.n_latents:
                raise InterventionError(
                    f"Ablate: means has {t.numel()} entries but the SAE has {self.sae.n_latents} latents"
                )
            vals = [t[f].item() for f in self.features]
        return tuple(_finite(v, f"Ablate mean of feature {f}") for f, v in zip(self.features, vals))

    def targets(self) -> dict[int, float]:
        if self.mode == "zero":
            return {f: 0.0 for f in self.features}
        return dict(zip(self.features, self.means))

    def specs(self, model: Model, edits: Sequence[Any] | None = None) -> list[tuple[str, dict]]:
        """This edit's plan on `model` as [(hookpoint, spec)] of plain tensors (see `compile_edits`)."""
        return _sae_specs(self, model, edits)

    def __repr__(self) -> str:
        return f"Ablate({_sae_label(self.sae)}, features={list(self.features)}, mode={self.mode!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Clamp:
    """Hold SAE features at fixed activation values, on every position or only where they fire.

    Values are raw activations (`unit='raw'`), or multiples of each feature's maximum activation over a
    corpus (`unit='max_act'`, Templeton et al. 2024's convention: "clamped to 5x its maximum"), which
    needs `stats` (a `FeatureStats` of this SAE) or `scale` ({feature: max activation}).
    """

    sae: Any
    """The SAE whose features are clamped (at `sae.cfg.hookpoint`)."""
    values: Mapping[int, float]
    """{feature index: value}, in `unit`s."""
    error_term: bool = True
    """Keep the SAE's error term (exact model except for these features); False edits the reconstruction."""
    where: str = "all"
    """'all': every position (as in Scaling Monosemanticity); 'active': only where the feature already fires."""
    unit: str = "raw"
    """'raw' (activation units) or 'max_act' (multiples of the feature's maximum activation)."""
    stats: Any = None
    """For unit='max_act': the SAE's `FeatureStats`, whose `max_act` gives each feature's scale."""
    scale: Mapping[int, float] | None = None
    """For unit='max_act' without stats: {feature: max activation} (raw units per unit)."""

    def __post_init__(self) -> None:
        check_sae(self.sae, "Clamp")
        if not isinstance(self.values, Mapping) or not self.values:
            raise InterventionError(f"Clamp.values must be a non-empty {{feature: value}} dict, got {self.values!r}")
        vals = {_feature(self.sae, f, "Clamp"): _finite(v, f"Clamp value of feature {f}") for f, v in self.values.items()}
        object.__setattr__(self, "values", vals)
        if self.where not in WHERE:
            raise InterventionError(f"Clamp.where must be one of {WHERE}, got {self.where!r}")
        if self.unit not in ("raw", "max_act"):
            raise InterventionError(f"Clamp.unit must be 'raw' or 'max_act', got {self.unit!r}")
        scale = None
        if self.unit == "max_act":
            if self.stats is not None:
                scale = max_activations(self.stats, self.sae, list(vals), "Clamp")
            elif isinstance(self.scale, Mapping) and all(f in self.scale for f in vals):
                scale = {f: _positive(self.scale[f], f"Clamp scale of feature {f}") for f in vals}
            else:
                raise InterventionError(
                    "Clamp(unit='max_act') needs the features' maximum activations: pass stats=feature_stats(model, sae) "
                    "(or scale={feature: max activation}), or give raw values with unit='raw'"
                )
        elif self.stats is not None or self.scale is not None:
            raise InterventionError("Clamp: stats= and scale= set the size of unit='max_act'; drop them or set unit='max_act'")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "stats", None)  # only the scale is kept: the edit stays small plain data

    def targets(self) -> dict[int, float]:
        """{feature: target activation in raw units}."""
        if self.scale is None:
            return dict(self.values)
        return {f: v * self.scale[f] for f, v in self.values.items()}

    def specs(self, model: Model, edits: Sequence[Any] | None = None) -> list[tuple[str, dict]]:
        """This edit's plan on `model` as [(hookpoint, spec)] of plain tensors (see `compile_edits`)."""
        return _sae_specs(self, model, edits)

    def __repr__(self) -> str:
        vals = ", ".join(f"{f}: {v:g}" for f, v in sorted(self.values.items()))
        extra = (f", unit={self.unit!r}" if self.unit != "raw" else "") + (f", where={self.where!r}" if self.where != "all" else "")
        return f"Clamp({_sae_label(self.sae)}, {{{vals}}}{extra})"


@dataclass(frozen=True, eq=False, repr=False)
class Steer:
    """Add `strength * scale * direction` to the activation at a hook point (prompt and every generated token).

    `unit` says what one unit of strength is: 'raw' (activation units along the unit-norm direction),
    'max_act' (the feature's maximum activation over a corpus, from `stats`: strength 1 adds as much of
    the direction as the feature's strongest firing does) or 'resid_norm' (the typical norm of the
    activation at the hook point, `activation_norm(model, hookpoint)`, passed as `scale`).
    """

    hookpoint: str | None
    """Where to add it, e.g. 'resid_post.6'; None takes the SAE's hook point when `direction` is (sae, feature)."""
    direction: Any
    """A vector [d_model] (normalised to unit norm unless unit='raw'), or (sae, feature): that feature's decoder row."""
    strength: float = 1.0
    """Multiplier, in `unit`s."""
    unit: str = "raw"
    """'raw', 'max_act' (needs `stats` or `scale`, and a feature direction) or 'resid_norm' (needs `scale`)."""
    stats: Any = None
    """For unit='max_act': the SAE's `FeatureStats` (its `max_act` of the feature is the scale)."""
    scale: float | None = None
    """Raw activation units per unit of strength (None for unit='raw'; filled from `stats` for 'max_act')."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", _finite(self.strength, "Steer.strength"))
        d = self.direction
        if isinstance(d, tuple):
            if len(d) != 2:
                raise InterventionError("Steer.direction as a tuple is (sae, feature)")
            check_sae(d[0], "Steer")
            object.__setattr__(self, "direction", (d[0], _feature(d[0], d[1], "Steer")))
            if self.hookpoint is None:
                object.__setattr__(self, "hookpoint", d[0].cfg.hookpoint)
        else:
            t = torch.as_tensor(d, dtype=torch.float32).detach()
            if t.ndim != 1:
                raise InterventionError(f"Steer.direction must be a vector [d_model], got shape {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise InterventionError("Steer.direction contains NaN or inf values")
            if self.unit != "raw":
                norm = float(t.norm())
                if norm == 0:
                    raise InterventionError("Steer.direction is the zero vector: it has no direction to steer along")
                t = t / norm
            object.__setattr__(self, "direction", t.cpu())
        if not isinstance(self.hookpoint, str):
            raise InterventionError(
                f"Steer.hookpoint must name a hook point such as 'resid_post.6', got {self.hookpoint!r}"
            )
        object.__setattr__(self, "scale", self._resolve_scale())
        object.__setattr__(self, "stats", None)  # only the scale is kept

    def _resolve_scale(self) -> float | None:
        if self.unit not in STEER_UNITS:
            raise InterventionError(f"Steer.unit must be one of {STEER_UNITS}, got {self.unit!r}")
        if self.unit == "raw":
            if self.stats is not None or self.scale is not None:
                raise InterventionError("Steer: stats= and scale= size the units 'max_act' and 'resid_norm'; drop them for unit='raw'")
            return None
        if self.unit == "max_act" and self.stats is not None:
            if not isinstance(self.direction, tuple):
                raise InterventionError("Steer(unit='max_act', stats=...) needs direction=(sae, feature): a plain vector has no maximum activation")
            sae, f = self.direction
            return max_activations(self.stats, sae, [f], "Steer")[f]
        if self.scale is None:
            how = ("stats=feature_stats(model, sae) (or scale=its max_act[feature])" if self.unit == "max_act"
                   else "scale=saekit.interventions.activation_norm(model, hookpoint)")
            raise InterventionError(f"Steer(unit={self.unit!r}) needs the size of one unit: pass {how}, or use unit='raw'")
        return _positive(self.scale, "Steer.scale")

    @property
    def raw_strength(self) -> float:
        """The strength in raw activation units (the norm of the added vector for a unit direction)."""
        return self.strength * (self.scale if self.scale is not None else 1.0)

    def vector(self) -> Tensor:
        """The vector added, strength included [d_model] (only this row travels to NDIF)."""
        d = self.direction
        v = d[0].W_dec[d[1]].detach().float().cpu() if isinstance(d, tuple) else d
        return (self.raw_strength * v).clone()

    def specs(self, model: Model, edits: Sequence[Any] | None = None) -> list[tuple[str, dict]]:
        """This edit's plan on `model`: [(hookpoint, {'op': 'add', 'vector' [d_model]})], checked against it."""
        try:
            model.resolve(self.hookpoint)
        except ValueError as err:
            raise InterventionError(f"{self!r}: {err}") from None
        v = self.vector()
        if v.numel() != model.d_model:
            raise InterventionError(
                f"{self!r}: the direction has {v.numel()} entries but {model.name} has d_model {model.d_model}"
            )
        return [(self.hookpoint, {"op": "add", "vector": v})]

    def __repr__(self) -> str:
        d = self.direction
        what = f"({_sae_label(d[0])}, {d[1]})" if isinstance(d, tuple) else f"<vector d={d.numel()}>"
        unit = "" if self.unit == "raw" else f", unit={self.unit!r} (x{self.scale:.4g})"
        return f"Steer({self.hookpoint!r}, {what}, strength={self.strength:g}{unit})"


def max_activations(stats: Any, sae: Any, features: Sequence[int], who: str) -> dict[int, float]:
    """{feature: maximum activation} from `stats` (a `FeatureStats` of `sae`), for the 'max_act' unit;
    raises when the statistics belong to another SAE or a feature never fired in them."""
    max_act = getattr(stats, "tensors", {}).get("max_act") if hasattr(stats, "tensors") else None
    if max_act is None:
        raise InterventionError(f"{who}: stats must be a FeatureStats (saekit.feature_stats(model, sae)), got {type(stats).__name__}")
    if max_act.shape[0] != sae.n_latents:
        raise InterventionError(
            f"{who}: these statistics describe {max_act.shape[0]} features but the SAE has {sae.n_latents}: pass this SAE's statistics"
        )
    out = {}
    for f in features:
        m = float(max_act[f])
        if not (math.isfinite(m) and m > 0):
            raise InterventionError(
                f"{who}: feature {f} never fired in these statistics ({stats.n_tokens:,} tokens), so its maximum "
                f"activation is unknown: compute statistics on more (or more relevant) text, or use unit='raw'"
            )
        out[f] = m
    return out


def _positive(value: Any, what: str) -> float:
    v = _finite(value, what)
    if v <= 0:
        raise InterventionError(f"{what} must be positive (raw activation units per unit), got {value!r}")
    return v


def describe_edits(edits: Any) -> str:
    """A short deterministic description of edits, for reprs and widgets."""
    if edits is None:
        return "none"
    if isinstance(edits, Mapping):
        return ", ".join(f"{h}: <callable>" for h in edits)
    items = edits if isinstance(edits, (list, tuple)) else [edits]
    return ", ".join(repr(e) if hasattr(e, "specs") else f"{e[0]}: <callable>" for e in items) or "none"


# -- compiling edits into plain tensors (what the trace, and NDIF, receive) -----------------------------


def check_fit(model: Model, sae: Any, hookpoint: str | None = None) -> str:
    """The hook point `sae` reads on `model` (default: its own `cfg.hookpoint`); raises `InterventionError`
    naming the fix when the SAE records none, the model has no such hook point, or the widths differ."""
    hookpoint = hookpoint or sae.cfg.hookpoint
    if hookpoint is None:
        raise InterventionError(
            "this SAE does not record its hook point: pass hookpoint='resid_post.6' (say), or set "
            "sae.cfg.hookpoint = 'resid_post.6' before editing"
        )
    try:
        model.resolve(hookpoint)
    except ValueError as e:
        raise InterventionError(f"the SAE's hook point does not fit {model.name}: {e}") from None
    if sae.d_in != model.d_model:
        raise InterventionError(
            f"the SAE reads width {sae.d_in} but {model.name} has d_model {model.d_model} at {hookpoint!r}: "
            f"this SAE was trained on another model"
        )
    return hookpoint


def _checked_encoder(sae: Any) -> dict:
    """The SAE's encoder as plain tensors, as its class describes it (`Sae.plain_encoder`; evaluated inside
    traces by `saekit.lm.encode_latents`), checked against `sae.encode` on a few vectors: an SAE whose
    encoder has no such description, or whose description disagrees with its `encode`, raises here."""
    try:
        enc = sae.plain_encoder()
    except (AttributeError, NotImplementedError):
        enc = None
    if enc is not None:
        gen = torch.Generator().manual_seed(0)
        rows = enc["W_enc"][torch.randperm(enc["W_enc"].shape[0], generator=gen)[:8]]
        # vectors along a few encoder rows (so that some latents fire), plus noise
        x = enc["x_offset"] + 4 * rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        x = x + 0.1 * torch.randn(x.shape, generator=gen)
        # the description computes in float32 from the (upcast) weights, so a bfloat16 SAE is checked against its own
        # code in float32 too: in bfloat16 the inputs' rounding alone moves latents past the tolerance
        ref = sae if sae.W_enc.dtype == torch.float32 else copy.deepcopy(sae).to(dtype=torch.float32)
        with torch.no_grad():
            want = ref.encode(x.to(ref.W_enc.device, torch.float32)).float().cpu()
            lat = encode_latents(enc, x)
            if "vals" in lat:
                got = torch.zeros(x.shape[0], sae.n_latents).scatter(-1, lat["idx"], lat["vals"])
            else:
                got = lat["dense"]
        if torch.allclose(got, want, atol=1e-4 * (1 + float(want.abs().max())), rtol=1e-3):
            return enc
    raise InterventionError(
        f"saekit cannot express the encoder of this {getattr(sae, 'architecture', '?')!r} SAE for feature edits "
        f"(its class's plain_encoder() is missing or disagrees with its encode())"
    )


def compile_edits(model: Model, edits: Sequence[Any]) -> list[tuple[str, Any]]:
    """Edit objects -> [(hookpoint, spec)] of plain tensors, checked against `model` (nothing runs): the
    plan the door runs, made by asking each edit for its own (`edit.specs(model, edits)`).

    Edits of one SAE at one hook point merge into one spec (one encode), in the place of the first of
    them; later feature targets win.
    """
    edits = list(edits)
    for e in edits:
        if not isinstance(e, (Splice, Ablate, Clamp, Steer)):
            raise InterventionError(f"not an edit: {e!r}")
    return [pair for e in edits for pair in e.specs(model, edits)]


def _edit_objects(edits: Any) -> list[Any]:
    """The edit objects among `edits` (any form the door's running methods take)."""
    if edits is None or isinstance(edits, Mapping):
        return []
    return [e for e in (edits if isinstance(edits, (list, tuple)) else [edits]) if hasattr(e, "specs")]


def _sae_specs(edit: Any, model: Model, edits: Sequence[Any] | None) -> list[tuple[str, dict]]:
    """The plan of an SAE edit (Splice, Ablate, Clamp) among the edit objects `edits` of one run: all
    edits of its SAE merge into one spec, which the first of them returns (the others return [])."""
    edits = [edit] if edits is None else list(edits)
    if not any(e is edit for e in edits):
        edits.append(edit)
    group = [e for e in edits if isinstance(e, (Splice, Ablate, Clamp)) and e.sae is edit.sae]
    if group[0] is not edit:
        return []
    sae = edit.sae
    hp = check_fit(model, sae)
    target_hp = getattr(sae.cfg, "target_hookpoint", None)
    if target_hp is not None:  # a transcoder: read its input hook point, edit the one it predicts
        check_fit(model, sae, target_hp)
        if model.resolve(target_hp).order <= model.resolve(hp).order:
            raise InterventionError(
                f"{edit!r}: this transcoder predicts {target_hp!r} from {hp!r}, which does not run first: "
                f"its target must come after its input in the forward pass"
            )
    targets: dict[int, float] = {}
    active_only: set[int] = set()
    edit_error_term = splice = None
    for e in group:
        if isinstance(e, Splice):
            splice = e.error_term
        else:
            if edit_error_term is not None and edit_error_term != e.error_term:
                raise InterventionError(
                    f"edits of the same SAE disagree about error_term ({e!r}); use one value, or add "
                    f"Splice(sae, error_term=...) to decide"
                )
            edit_error_term = e.error_term
            targets.update(e.targets())
            if isinstance(e, Clamp) and e.where == "active":
                active_only |= set(e.values)
            else:
                active_only -= set(e.targets())
    error_term = splice if splice is not None else edit_error_term
    if error_term and not targets:
        return []  # the exact model: nothing to do
    feats = sorted(targets)
    rows = torch.tensor(feats, dtype=torch.long) if feats else None
    enc = _checked_encoder(sae)
    spec: dict[str, Any] = {
        "op": "sae",
        "error_term": bool(error_term),
        "rows": rows,
        "enc": encoder_rows(enc, rows) if rows is not None and error_term else enc,
    }
    if rows is not None:
        spec["target"] = torch.tensor([targets[f] for f in feats], dtype=torch.float32)
        spec["dec_rows"] = sae.W_dec.detach().float().cpu()[rows].clone()
        if active_only:
            spec["active_only"] = torch.tensor([f in active_only for f in feats], dtype=torch.bool)
    if not error_term:
        spec["W_dec"] = sae.W_dec.detach().float().cpu()
        spec["b_dec"] = sae.b_dec.detach().float().cpu()
        if getattr(sae, "W_skip", None) is not None:
            spec["W_skip"] = sae.W_skip.detach().float().cpu()
    if target_hp is not None:
        key = f"transcoder {hp} -> {target_hp} #{next(i for i, e in enumerate(edits) if e is edit)}"
        spec["source"] = key
        return [(hp, {"op": "read", "key": key}), (target_hp, spec)]
    return [(hp, spec)]


# -- measurements -----------------------------------------------------------------------------------


def _token_strings(model: Model, ids: Iterable[int]) -> list[str]:
    return [model.tokenizer.decode([int(i)]) for i in ids]


def _token_ids(model: Model, tokens: Sequence[int | str] | None) -> list[int] | None:
    if tokens is None:
        return None
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    ids = []
    for t in tokens:
        if isinstance(t, str):
            enc = model.tokenizer(t, add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                raise InterventionError(
                    f"token {t!r} is {len(enc)} tokens for this tokenizer; pass single tokens (e.g. ' Paris') or ids"
                )
            ids.append(int(enc[0]))
        else:
            ids.append(int(t))
    return ids


@dataclass(repr=False)
class Effects:
    """What edits did to the next-token predictions on one text (clean vs edited, one forward)."""

    text: str
    tokens: list[str]
    """The text's tokens, BOS first; position t predicts token t+1."""
    edits: str
    """Description of the edits."""
    loss_clean: float
    """Mean next-token NLL of the text, clean."""
    loss_edited: float
    """Mean next-token NLL of the text, edited."""
    target_tokens: list[str]
    """The chosen tokens whose log-probs are tracked (may be empty)."""
    logp_clean: Tensor
    """Next-token log-prob of each chosen token at each position [T, n]."""
    logp_edited: Tensor
    """The same, edited [T, n]."""
    top_up: list[list[tuple[str, float, float]]]
    """Per position: (token, p_clean, p_edited) of the tokens whose probability rose most."""
    top_down: list[list[tuple[str, float, float]]]
    """Per position: (token, p_clean, p_edited) of the tokens whose probability fell most."""

    @property
    def loss_delta(self) -> float:
        return self.loss_edited - self.loss_clean

    @property
    def logprob_change(self) -> Tensor:
        """Edited minus clean log-prob of each chosen token at each position [T, n]."""
        return self.logp_edited - self.logp_clean

    def __repr__(self) -> str:
        return (
            f"Effects(tokens={len(self.tokens)}, edits=[{self.edits}], loss {self.loss_clean:.3f} -> "
            f"{self.loss_edited:.3f}, tracked={self.target_tokens})"
        )

    def table(self, position: int = -1) -> str:
        """Plain-text table of the tokens that moved most at one position."""
        rows = [f"after {self.tokens[position]!r}:"]
        for name, lst in (("up", self.top_up[position]), ("down", self.top_down[position])):
            for tok, pc, pe in lst:
                rows.append(f"  {name:<4} {tok!r:<16} {pc:.4f} -> {pe:.4f}")
        return "\n".join(rows)


def measure(
    model: Model,
    text: str,
    edits: Any,
    *,
    tokens: Sequence[int | str] | None = None,
    top: int = 5,
) -> Effects:
    """Effects of `edits` on the next-token predictions over `text` (clean and edited in one forward).

    `tokens`: tokens to track (strings of one token each, or ids); `top`: how many most-moved tokens to
    report per position (ranked by change in probability).
    """
    if not isinstance(top, int) or top < 0:
        raise InterventionError(f"top must be a non-negative int, got {top!r}")
    ids = model.encode_prompt(text)
    token_ids = _token_ids(model, tokens)
    out = model.compare(ids, edits, tokens=token_ids, top=top)
    T = ids.shape[1]
    n = len(token_ids or [])

    def tops(prefix: str) -> list[list[tuple[str, float, float]]]:
        if top == 0:
            return [[] for _ in range(T)]
        res = []
        for t in range(T):
            strs = _token_strings(model, out[f"{prefix}_ids"][0, t].tolist())
            pc = out[f"{prefix}_logp_clean"][0, t].exp().tolist()
            pe = out[f"{prefix}_logp_edited"][0, t].exp().tolist()
            res.append([(s, round(a, 6), round(b, 6)) for s, a, b in zip(strs, pc, pe)])
        return res

    return Effects(
        text=text,
        tokens=_token_strings(model, ids[0].tolist()),
        edits=describe_edits(edits),
        loss_clean=float(out["nll_clean"].mean()),
        loss_edited=float(out["nll_edited"].mean()),
        target_tokens=_token_strings(model, token_ids or []),
        logp_clean=out["logp_clean"][0] if n else torch.zeros(T, 0),
        logp_edited=out["logp_edited"][0] if n else torch.zeros(T, 0),
        top_up=tops("up"),
        top_down=tops("down"),
    )


@dataclass(frozen=True)
class LossChange:
    """Mean next-token loss on texts, clean and edited."""

    n_tokens: int
    loss_clean: float
    loss_edited: float

    @property
    def delta(self) -> float:
        return self.loss_edited - self.loss_clean


def loss_change(
    model: Model,
    texts: Any,
    edits: Any,
    *,
    n_tokens: int = 2048,
    context_len: int = 64,
    batch_size: int = 8,
    reference: bool = False,
) -> LossChange:
    """Loss change of `edits` on `texts` (strings, Documents or TokenContexts). BOS and padding targets
    are not scored. A local model runs each batch's clean and edited runs in one forward without logits
    (`Model.score_runs`); a remote model, or `reference=True`, runs all batches in one nnsight session
    (one request when remote) with `Model.compare_batches`. Several edits on the same texts: `loss_changes`."""
    return loss_changes(model, texts, {"edited": edits}, n_tokens=n_tokens, context_len=context_len,
                        batch_size=batch_size, reference=reference)["edited"]


def loss_changes(
    model: Model,
    texts: Any,
    edits: Mapping[Any, Any],
    *,
    n_tokens: int = 2048,
    context_len: int = 64,
    batch_size: int = 8,
    reference: bool = False,
    runs_per_forward: int = 8,
) -> dict[Any, LossChange]:
    """`loss_change` of each entry of `edits` ({name: edits}, e.g. a feature's ablation and those of random features
    of similar density) on the same tokens: {name: LossChange}, each equal to its own `loss_change` call. A local
    model runs every batch's clean run and the edited runs in one forward (`Model.score_runs`), at most
    `runs_per_forward` runs in all (the stacked activations grow with the runs; more edits take more forwards, each
    repeating the clean run), so the clean run and the blocks before the first edited layer are shared; a remote
    model, or `reference=True`, compares each entry in its own session."""
    from .data import TokenContexts, contexts

    if not isinstance(edits, Mapping) or not edits:
        raise InterventionError("loss_changes: edits must be a non-empty dict {name: edits}, e.g. "
                                "{'feature': Ablate(sae, [f]), 'random': Ablate(sae, [r])}; for one edit use loss_change")
    if not isinstance(runs_per_forward, int) or runs_per_forward < 2:
        raise InterventionError(f"loss_changes: runs_per_forward must be an int >= 2 (the clean run and one edit), got {runs_per_forward!r}")
    names = list(edits)
    for name in names:
        compile_edits(model, _edit_objects(edits[name]))  # validate the edit objects before tokenising
    ctx = texts if isinstance(texts, TokenContexts) else contexts(model, texts, context_len=context_len, n_tokens=n_tokens)
    batches = [
        (ctx.input_ids[s : s + batch_size], ctx.attention_mask[s : s + batch_size]) for s in range(0, len(ctx), batch_size)
    ]
    if reference or model.remote:  # nll [R + 1, B, T - 1] per batch, run 0 clean, as score_runs returns
        per_name = [model.compare_batches(batches, edits[name]) for name in names]
        nlls = [torch.stack([per_name[0][b]["nll_clean"]] + [r[b]["nll_edited"] for r in per_name]) for b in range(len(batches))]
    else:
        groups = [names[i : i + runs_per_forward - 1] for i in range(0, len(names), runs_per_forward - 1)]
        nlls = []
        for ids, mask in batches:
            parts = [model.score_runs(ids, [edits[name] for name in group], mask, kl=False)["nll"] for group in groups]
            nlls.append(torch.cat([parts[0][:1]] + [p[1:] for p in parts]))  # [1 + len(names), B, T - 1]
    totals = torch.zeros(len(names) + 1, dtype=torch.float64)
    n = 0
    for (_, mask), nll_RBT in zip(batches, nlls):
        score_BT = mask[:, 1:].bool()
        totals += nll_RBT[:, score_BT].double().sum(-1).cpu()
        n += int(score_BT.sum())
    means = (totals / max(n, 1)).tolist()
    return {name: LossChange(n_tokens=n, loss_clean=means[0], loss_edited=means[i + 1]) for i, name in enumerate(names)}


@dataclass(frozen=True)
class Generation:
    """Default and edited continuations of one prompt, generated side by side."""

    prompt: str
    default: str
    """Continuation without edits."""
    steered: str
    """Continuation with the edits."""
    edits: str
    """Description of the edits."""
    max_new_tokens: int
    do_sample: bool
    seed: int

    def __repr__(self) -> str:
        return f"Generation(prompt={self.prompt!r}, default={self.default!r}, steered={self.steered!r}, edits=[{self.edits}])"

    def __str__(self) -> str:
        return f"prompt:  {self.prompt}\ndefault: {self.default}\nsteered: {self.steered}\nedits:   {self.edits}"

    def _repr_html_(self) -> str:
        e = html.escape
        return (
            "<table><tr><th>prompt</th><th>default</th><th>steered</th></tr>"
            f"<tr><td>{e(self.prompt)}</td><td>{e(self.default)}</td><td>{e(self.steered)}</td></tr></table>"
            f"<div>edits: {e(self.edits)}</div>"
        )


def generate(
    model: Model,
    prompt: str,
    edits: Any,
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> Generation:
    """Greedy (default) or sampled continuations of `prompt` without and with `edits`, in one generate
    call. Sampling is seeded by `seed` (the caller's RNG is left alone)."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
        raise InterventionError(f"max_new_tokens must be a positive int (a generation length of zero makes no text), got {max_new_tokens!r}")
    _finite(temperature, "temperature")
    ids = model.encode_prompt(prompt)
    default, steered = model.generate(
        ids, edits, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed
    )
    dec = model.tokenizer.decode
    return Generation(
        prompt=prompt,
        default=dec(default[0].tolist(), skip_special_tokens=True),
        steered=dec(steered[0].tolist(), skip_special_tokens=True),
        edits=describe_edits(edits),
        max_new_tokens=max_new_tokens,
        do_sample=bool(do_sample),
        seed=seed,
    )


def _mean_latents(sae_enc: dict, n_latents: int):
    """A reduction for `Model.capture_batches`: (sum of latents [F], kept tokens) of a batch."""

    def reduce(acts_BTD: Tensor, keep_BT: Tensor) -> tuple[Tensor, int]:
        x = acts_BTD[keep_BT.to(acts_BTD.device)].float()
        lat = encode_latents(sae_enc, x)  # saekit's in-trace encoder: travels by value with the closure
        if "vals" in lat:
            total = torch.zeros(n_latents, device=x.device).index_add_(0, lat["idx"].reshape(-1), lat["vals"].reshape(-1))
        else:
            total = lat["dense"].sum(0)
        return total.cpu(), int(x.shape[0])

    return reduce


def _mean_norm(acts_BTD: Tensor, keep_BT: Tensor) -> tuple[float, int]:
    """A reduction for `Model.capture_batches`: (sum of activation norms, kept tokens) of a batch."""
    x = acts_BTD[keep_BT.to(acts_BTD.device)].float()
    return float(x.norm(dim=-1).sum()), int(x.shape[0])


def activation_norm(
    model: Model, hookpoint: str, texts: Any = None, *, n_tokens: int = 4096, context_len: int = 64, batch_size: int = 8
) -> float:
    """Mean L2 norm of the activation at `hookpoint` over `texts` (default: the built-in corpus's train split),
    BOS and padding left out: the size of one unit of `Steer(unit='resid_norm')`."""
    from .data import contexts, corpus

    model.resolve(hookpoint)
    ctx = contexts(model, corpus() if texts is None else texts, context_len=context_len, n_tokens=n_tokens)
    batches = [
        (ctx.input_ids[s : s + batch_size], ctx.attention_mask[s : s + batch_size]) for s in range(0, len(ctx), batch_size)
    ]
    parts = model.capture_batches(batches, hookpoint, _mean_norm)
    return sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1)


def feature_means(
    model: Model, sae: Any, texts: Any = None, *, n_tokens: int = 4096, context_len: int = 64, batch_size: int = 8
) -> Tensor:
    """Mean activation of every feature [n_latents] over `texts` (default: the built-in corpus's train
    split), BOS and padding left out; for `Ablate(..., mode='mean')`. One session when remote."""
    from .data import contexts, corpus

    hp = check_fit(model, sae)
    ctx = contexts(model, corpus() if texts is None else texts, context_len=context_len, n_tokens=n_tokens)
    batches = [
        (ctx.input_ids[s : s + batch_size], ctx.attention_mask[s : s + batch_size]) for s in range(0, len(ctx), batch_size)
    ]
    parts = model.capture_batches(batches, hp, _mean_latents(_checked_encoder(sae), sae.n_latents))
    total = sum(p[0] for p in parts)
    n = sum(p[1] for p in parts)
    return total / max(n, 1)
