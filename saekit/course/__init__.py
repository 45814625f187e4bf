"""The course track's checks: students write the key pieces of an SAE pipeline, and each `check_*` tells them
precisely what is wrong (shape, value at which element, a known mistake by name, a gradient that does not
flow, an input changed in place) without printing the answer. Exercises live in `notebooks/course/`.

    forward.py       check_encode, check_decode, check_topk       (the SAE forward pass, the TopK activation)
    metrics.py       check_fvu, check_next_token_loss, check_ce_loss_recovered
    auxk.py          check_auxk_loss                               (reviving dead latents)
    steering.py      check_steer                                   (a steering edit)
    attribution.py   check_attribution_patching                    (the AtP estimate of circuit discovery)
    checking.py      the machinery every check shares

A failed check raises `saekit.errors.ExerciseError` (an `AssertionError`); a passed one prints one line.
"""

from __future__ import annotations

from ..errors import ExerciseError
from .attribution import check_attribution_patching
from .auxk import check_auxk_loss
from .forward import check_decode, check_encode, check_topk
from .metrics import check_ce_loss_recovered, check_fvu, check_next_token_loss
from .steering import check_steer

__all__ = [
    "ExerciseError",
    "check_attribution_patching",
    "check_auxk_loss",
    "check_ce_loss_recovered",
    "check_decode",
    "check_encode",
    "check_fvu",
    "check_next_token_loss",
    "check_steer",
    "check_topk",
]
