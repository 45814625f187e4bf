"""Exercise: a steering edit, as `saekit.Steer` makes it (saekit/interventions.py) and the model applies it.

    steer(acts_BTD, direction_D, strength) -> acts_BTD + strength * direction / ||direction||
                                              at every position but the first (the BOS separator)

saekit's `Steer` normalises a direction to unit norm (for the units 'max_act' and 'resid_norm'), so that
`strength` is in activation units, and the model's edit leaves the separator (position 0, BOS) alone: its
activation is an outlier (norm in the thousands on Gemma) that no SAE or steering vector is meant for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checking import (
    Mistake,
    as_tensor,
    call,
    check_finite,
    check_gradients,
    check_shape,
    check_unchanged,
    compare,
    generator,
    passed,
    protect,
    randn,
)

B, T, D = 2, 5, 6


def reference_steer(acts_BTD: Tensor, direction_D: Tensor, strength: float) -> Tensor:
    """The steered activations: the unit direction times `strength` added at positions 1.. (not BOS)."""
    v = strength * direction_D / direction_D.norm()
    add = torch.zeros_like(acts_BTD)
    add[:, 1:] = v
    return acts_BTD + add


CASES = [(90, 3.0), (91, -2.0), (92, 0.0)]
"""(seed, strength): steering toward, away from, and not at all."""


def check_steer(steer) -> None:
    """Check `steer(acts_BTD, direction_D, strength) -> steered acts_BTD`."""
    __tracebackhide__ = True
    name = "steer"
    for seed, strength in CASES:
        gen = generator(seed)
        acts = randn(B, T, D, gen=gen)
        direction = randn(D, gen=gen, scale=3.0)  # not unit norm: normalising matters
        mine = {"acts_BTD": acts.clone().requires_grad_(True), "direction_D": direction.clone()}
        before = protect(mine)
        got = as_tensor(call(steer, name, [mine["acts_BTD"], mine["direction_D"], strength]), name)
        check_unchanged(mine, before, name)
        check_shape(got, (B, T, D), name, "[B, T, D] (the activations, steered)", {(D,): "that is only the added vector: return the steered activations"})
        check_finite(got, name)
        ref = acts.clone().requires_grad_(True)
        want = reference_steer(ref, direction, strength)
        unit = direction / direction.norm()
        last = acts.clone()
        last[:, -1] += strength * unit
        def after_bos(v: Tensor) -> Tensor:
            out = acts.clone()
            out[:, 1:] += v
            return out

        mistakes = [
            Mistake(after_bos(strength * direction), "the direction is added as it is; make it unit norm first (divide by its norm), so that strength is in activation units"),
            Mistake(acts + strength * unit, "position 0 (the BOS separator) is steered too; leave it alone and steer positions 1 onward"),
            Mistake(acts + strength * direction, "the direction is not unit norm, and position 0 (BOS) is steered too"),
            Mistake(reference_steer(acts, direction, -strength), "the direction's sign is flipped: add strength times the direction"),
            Mistake(last, "only the last position is steered; steer every position after the first"),
            Mistake(after_bos(strength * direction / direction.sum()), "the direction is divided by the sum of its entries; divide by its (Euclidean) norm"),
        ]
        compare(got, want.detach(), name, mistakes=mistakes if strength != 0 else [], what=f" (strength {strength:g})")
        check_gradients(got, want, name, {"acts_BTD": mine["acts_BTD"]}, {"acts_BTD": ref}, gen=generator(seed + 3))
    passed(name, len(CASES))


__all__ = ["check_steer", "reference_steer", "CASES"]
