"""The checking machinery every exercise family shares.

A check calls the student's function on small inputs it makes itself, and compares what comes back with
what saekit (or a few lines of reference torch) computes, in this order:

1. the call itself: not written yet (`NotImplementedError`), or an exception, with a hint for the usual
   cause (a matrix product in the wrong orientation);
2. the type and shape of the result, then NaN or inf;
3. the known mistakes of that exercise: each `Mistake` is what a specific wrong implementation returns on
   the same inputs (the ReLU forgotten, the mean not subtracted, ...); a match names the mistake;
4. otherwise where the values are wrong: how many elements, the first wrong one's index, the student's value
   there and whether it is too large or too small;
5. gradients: that they reach every input they should (and none they should not), with the right values;
6. the inputs: a function that changed its arguments in place is told so.

Messages never contain the reference's values: a student learns what is wrong, not the answer. Every
failure raises `ExerciseError` (so a solutions notebook run by nbval fails when its check fails); success
prints one line. Frames here set `__tracebackhide__`, which IPython and pytest honour, so a student sees
the message under their own cell, not this module's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import ExerciseError

RTOL = 1e-4
"""Relative tolerance of every comparison (float32 arithmetic in a different order stays well inside it)."""
ATOL = 1e-5
"""Absolute tolerance of every comparison."""

NOT_WRITTEN = "is not written yet"
"""The phrase every not-yet-written exercise's message contains (the tests look for it)."""


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation: what it returns on the check's inputs, and what to tell the student."""

    output: Any
    """What the mistaken implementation returns on the same inputs (a tensor or a number)."""
    message: str
    """What is wrong, in words that point at the fix without giving the code."""


def generator(seed: int) -> torch.Generator:
    """A seeded CPU generator: every check draws the same inputs on every run."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, gen: torch.Generator, scale: float = 1.0, offset: float = 0.0) -> Tensor:
    """float32 normal draws [shape] from `gen`, times `scale`, plus `offset`."""
    return torch.randn(*shape, generator=gen) * scale + offset


def call(fn: Any, name: str, args: Sequence[Any], hint: Callable[[BaseException], str | None] | None = None) -> Any:
    """`fn(*args)`, turning "not written yet" and any exception into an `ExerciseError` that says so."""
    __tracebackhide__ = True
    if not callable(fn):
        raise ExerciseError(
            f"pass your function itself to the check, e.g. check({name}), not the result of calling it "
            f"(got a {type(fn).__name__})"
        )
    try:
        return fn(*args)
    except NotImplementedError:
        raise ExerciseError(
            f"`{name}` {NOT_WRITTEN}: replace its `raise NotImplementedError` line with your code, "
            "run that cell, then run this check again"
        ) from None
    except ExerciseError:
        raise
    except Exception as err:  # the student's code failed: say how, with the usual cause when we know it
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        msg = f"`{name}` raised {type(err).__name__}: {first}"
        extra = hint(err) if hint is not None else None
        if extra is None and ("in-place operation" in str(err) or "leaf Variable" in str(err)):
            extra = "you change an input in place; leave the inputs alone and build a new tensor (x = x + v, not x += v)"
        raise ExerciseError(msg + (f"\nHint: {extra}" if extra else "")) from None


def matmul_hint(orientation: str) -> Callable[[BaseException], str | None]:
    """A hint for shape errors in matrix products, naming the weights' orientation (`orientation`)."""

    def hint(err: BaseException) -> str | None:
        text = str(err)
        if any(s in text for s in ("mat1 and mat2", "size mismatch", "must match the size", "shapes cannot be multiplied", "doesn't match the broadcast shape", "size of tensor")):
            return orientation
        return None

    return hint


def as_tensor(got: Any, name: str, *, allow_number: bool = False) -> Tensor:
    """The result as a tensor; a number is accepted only where `allow_number` (metrics reported as floats)."""
    __tracebackhide__ = True
    if isinstance(got, Tensor):
        return got
    if allow_number and isinstance(got, (int, float)) and not isinstance(got, bool):
        return torch.tensor(float(got))
    if got is None:
        raise ExerciseError(f"`{name}` returned None: add a `return` with your result")
    if isinstance(got, (int, float)):
        raise ExerciseError(
            f"`{name}` returned a Python {type(got).__name__}; return a torch.Tensor (a 0-d tensor for one number), "
            "so that it can be differentiated (no .item() or float())"
        )
    if isinstance(got, tuple):
        raise ExerciseError(f"`{name}` returned a tuple of {len(got)}; return one tensor")
    raise ExerciseError(f"`{name}` returned a {type(got).__name__}; return a torch.Tensor")


def check_shape(got: Tensor, shape: Sequence[int], name: str, spelled: str, hints: Mapping[tuple[int, ...], str] | None = None) -> None:
    """Raise unless `got` has `shape` (spelled out in the papers' letters as `spelled`, e.g. "[B, F]")."""
    __tracebackhide__ = True
    want = tuple(shape)
    have = tuple(got.shape)
    if have == want:
        return
    if len(want) == 0 and got.numel() == 1:
        return  # a one-element tensor is as good as a 0-d one for a number
    msg = f"`{name}` returned a tensor of shape {have}; it should be {spelled} = {want}"
    extra = (hints or {}).get(have)
    raise ExerciseError(msg + (f". {extra}" if extra else ""))


def check_finite(got: Tensor, name: str) -> None:
    """Raise when `got` holds NaN or inf, naming the first such element."""
    __tracebackhide__ = True
    bad = ~torch.isfinite(got.detach())
    if bool(bad.any()):
        where = _index(bad)
        raise ExerciseError(
            f"`{name}` returned {int(bad.sum())} NaN/inf value(s), the first at {where}: look for a division by "
            "zero or a log of zero"
        )


def close(a: Any, b: Any) -> bool:
    """True when `a` and `b` have one shape and agree within RTOL/ATOL (NaNs nowhere)."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    if a.shape != b.shape and not (a.numel() == b.numel() == 1):
        return False
    return bool(torch.allclose(a.reshape(b.shape), b, rtol=RTOL, atol=ATOL))


def compare(
    got: Tensor,
    want: Any,
    name: str,
    *,
    mistakes: Sequence[Mistake] = (),
    diagnose: Callable[[Tensor], str | None] | None = None,
    what: str = "",
) -> None:
    """Raise unless `got` equals `want`: a known mistake by name, else `diagnose`'s reading, else where the
    values differ (count, first index, the student's value there, too large or too small; never `want`)."""
    __tracebackhide__ = True
    if close(got, want):
        return
    for m in mistakes:
        if close(got, m.output):
            raise ExerciseError(f"`{name}`{what}: {m.message}")
    if diagnose is not None:
        found = diagnose(got)
        if found:
            raise ExerciseError(f"`{name}`{what}: {found}")
    g = got.detach().double().reshape(torch.as_tensor(want).shape)
    w = torch.as_tensor(want).detach().double()
    excess = (g - w).abs() - (ATOL + RTOL * w.abs())
    if g.dim() == 0:
        side = "too large" if g > w else "too small"
        raise ExerciseError(f"`{name}`{what} returned {float(g):.6g}, which is {side}")
    bad = excess > 0
    i = _index(bad)
    at = tuple(int(j) for j in bad.nonzero()[0])
    side = "too large" if g[at] > w[at] else "too small"
    raise ExerciseError(
        f"`{name}`{what}: {int(bad.sum())} of {bad.numel()} values are wrong; the first is at {i}, "
        f"where yours is {float(g[at]):.6g} ({side})"
    )


def gradients(out: Tensor, inputs: Mapping[str, Tensor], weight: Tensor) -> dict[str, Tensor | None]:
    """{name: d(sum(out * weight)) / d input} (None where no gradient reaches the input)."""
    tensors = list(inputs.values())
    g = torch.autograd.grad((out * weight).sum(), tensors, allow_unused=True)
    return dict(zip(inputs, g))


def check_gradients(
    got: Tensor,
    want: Tensor,
    name: str,
    got_inputs: Mapping[str, Tensor],
    want_inputs: Mapping[str, Tensor],
    *,
    gen: torch.Generator,
    must_not_reach: Mapping[str, str] | None = None,
    stray: Mapping[str, str] | None = None,
) -> None:
    """Backpropagate one random weighting of the result through the student's graph and the reference's,
    and compare the gradient reaching every input; `must_not_reach` {input: message} names inputs no
    gradient may reach, `stray` {input: message} what to say when gradient reaches elements of an input
    that the reference gives none (TopK's unkept latents)."""
    __tracebackhide__ = True
    names = ", ".join(f"`{n}`" for n in got_inputs)
    if not got.requires_grad:
        raise ExerciseError(
            f"`{name}`: no gradient flows from the result back to {names}: the result is cut off from its inputs "
            "(.detach(), .data, .item(), numpy, torch.no_grad() or a new tensor built from Python numbers cut the graph)"
        )
    weight = torch.randn(want.shape, generator=gen).to(want.dtype)
    try:
        g_got = gradients(got.reshape(want.shape), got_inputs, weight)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        hint = (" (a tensor the backward pass needs was changed in place after use: build new tensors instead of "
                "+=, *=, relu_())") if "inplace" in first or "in-place" in first else ""
        raise ExerciseError(f"`{name}`: backpropagating through the result failed: {first}{hint}") from None
    g_want = gradients(want, {n: t for n, t in want_inputs.items() if n not in (must_not_reach or {})}, weight)
    for n in got_inputs:
        gg, gw = g_got[n], g_want.get(n)
        if n in (must_not_reach or {}):
            if gg is not None and bool(gg.abs().gt(0).any()):
                raise ExerciseError(f"`{name}`: {must_not_reach[n]}")
            continue
        if gg is None or not bool(gg.abs().gt(0).any()):
            raise ExerciseError(
                f"`{name}`: no gradient reaches `{n}`: it is used without a graph (a .detach(), .data, "
                "torch.no_grad() or an in-place overwrite cut it), or not used at all"
            )
        if n in (stray or {}):
            wrong = (gw == 0) & (gg != 0)
            if bool(wrong.any()):
                raise ExerciseError(f"`{name}`: gradient reaches `{n}` at {_index(wrong)}, where it should not: {stray[n]}")
        compare(gg, gw, name, what=f"'s gradient with respect to `{n}`")


def protect(args: Mapping[str, Any]) -> dict[str, Any]:
    """Copies of the tensor arguments, to see afterwards whether the student's function changed them."""
    return {k: v.detach().clone() for k, v in args.items() if isinstance(v, Tensor)}


def check_unchanged(args: Mapping[str, Any], before: Mapping[str, Tensor], name: str) -> None:
    """Raise when the student's function changed one of its tensor arguments in place."""
    __tracebackhide__ = True
    for k, old in before.items():
        if not torch.equal(args[k].detach(), old):
            raise ExerciseError(
                f"`{name}` changed its argument `{k}` in place; leave the inputs alone and return a new tensor "
                "(x = x + v rather than x += v; relu() rather than relu_(); clone() before writing into a copy)"
            )


def passed(name: str, n_cases: int, aspects: str = "shape, values, gradients, inputs left unchanged") -> None:
    """Print the success line: how many input cases were checked, and what about them."""
    print(f"\u2713 `{name}` is right on all {n_cases} cases ({aspects}).")


def _index(mask: Tensor) -> str:
    """The first True element's index as "[i, j]"."""
    at = mask.nonzero()[0].tolist()
    return "[" + ", ".join(str(i) for i in at) + "]"


__all__ = [
    "ATOL",
    "NOT_WRITTEN",
    "RTOL",
    "Mistake",
    "as_tensor",
    "call",
    "check_finite",
    "check_gradients",
    "check_shape",
    "check_unchanged",
    "close",
    "compare",
    "generator",
    "gradients",
    "matmul_hint",
    "passed",
    "protect",
    "randn",
]
