"""Exercises: the SAE forward pass (encode, decode) and the TopK activation.

The references are saekit's own: a `ReluSae` holding the check's weights (`Sae.encode`, `Sae.decode`,
saekit/saes/base.py and relu.py) and the TopK kernel of `TopKSae` (`saes/kernels.topk_encode`).
Conventions, as in saekit: `W_enc` and `W_dec` are both [F, D] (one row per latent).

    encode(x_BD, W_enc_FD, b_enc_F, b_dec_D) = ReLU((x - b_dec) @ W_enc.T + b_enc)     [B, F]
    decode(latents_BF, W_dec_FD, b_dec_D)    = latents @ W_dec + b_dec                  [B, D]
    topk(pre_BF, k)                          = ReLU of the k largest per row, 0 elsewhere [B, F]
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import SaeConfig
from ..saes import Sae
from ..saes.kernels import topk_encode
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
    matmul_hint,
    passed,
    protect,
    randn,
)

B, D, F = 5, 6, 10
"""The checks' sizes: batch, model width, latents (all different, so a transposed weight cannot pass)."""

ORIENTATION = (
    "W_enc and W_dec are [F, D], one row per latent (saekit's convention): (x - b_dec) [B, D] @ W_enc.T [D, F] "
    "gives [B, F], and latents [B, F] @ W_dec [F, D] gives [B, D]"
)


def reference_sae(W_enc_FD: Tensor, b_enc_F: Tensor, W_dec_FD: Tensor, b_dec_D: Tensor) -> Sae:
    """saekit's ReLU SAE holding the given weights: the reference for `encode` and `decode`."""
    d, f = W_enc_FD.shape[1], W_enc_FD.shape[0]
    sae = Sae(SaeConfig(d_in=d, n_latents=f, k=1, architecture="relu"))
    with torch.no_grad():
        for name, value in (("W_enc", W_enc_FD), ("b_enc", b_enc_F), ("W_dec", W_dec_FD), ("b_dec", b_dec_D)):
            getattr(sae, name).copy_(value)
    return sae


def _weights(seed: int) -> dict[str, Tensor]:
    gen = generator(seed)
    return {
        "x_BD": randn(B, D, gen=gen, offset=0.5),
        "W_enc_FD": randn(F, D, gen=gen, scale=0.5),
        "b_enc_F": randn(F, gen=gen, scale=0.3),
        "b_dec_D": randn(D, gen=gen, scale=0.8),
        "W_dec_FD": randn(F, D, gen=gen, scale=0.5),
    }


def _leaves(ts: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in ts.items()}


def check_encode(encode) -> None:
    """Check `encode(x_BD, W_enc_FD, b_enc_F, b_dec_D) -> latents_BF`, the SAE's encoder (ReLU code)."""
    __tracebackhide__ = True
    name = "encode"
    n = 0
    for seed in (0, 1):
        w = _weights(seed)
        args = {k: w[k] for k in ("x_BD", "W_enc_FD", "b_enc_F", "b_dec_D")}
        mine = _leaves(args)
        before = protect(mine)
        got = as_tensor(call(encode, name, list(mine.values()), matmul_hint(ORIENTATION)), name)
        check_unchanged(mine, before, name)
        check_shape(got, (B, F), name, "[B, F] (one value per latent)", {(B, D): ORIENTATION, (F, B): "rows are tokens: return [B, F], not its transpose"})
        check_finite(got, name)
        x, W, b, c = args.values()
        ref = _leaves(args)
        want = reference_sae(ref["W_enc_FD"], ref["b_enc_F"], w["W_dec_FD"], ref["b_dec_D"])
        want_out = torch.relu((ref["x_BD"] - ref["b_dec_D"]) @ ref["W_enc_FD"].T + ref["b_enc_F"])
        with torch.no_grad():  # the reference is saekit's own encoder; want_out is the same graph for gradients
            lib = want.encode(x)
        assert torch.allclose(lib, want_out.detach(), atol=1e-6), "reference disagrees with saekit's ReluSae.encode"
        pre = (x - c) @ W.T + b
        mistakes = [
            Mistake(pre, "some latents are negative: the code is the ReLU of the pre-activations (latents are >= 0)"),
            Mistake(torch.relu(x @ W.T + b), "b_dec is not subtracted from x before encoding (the encoder reads x - b_dec)"),
            Mistake(torch.relu((x + c) @ W.T + b), "b_dec is added to x; the encoder reads x - b_dec"),
            Mistake(torch.relu((x - c) @ W.T), "b_enc, the encoder bias, is missing"),
            Mistake(torch.relu((x - c) @ W.T) + b, "the ReLU comes before b_enc is added; add the bias, then ReLU"),
        ]
        compare(got, lib, name, mistakes=mistakes, diagnose=_negative)
        check_gradients(got, want_out, name, mine, ref, gen=generator(seed + 10))
        n += 1
    passed(name, n)


def _negative(got: Tensor) -> str | None:
    neg = got.detach() < 0
    if bool(neg.any()):
        at = neg.nonzero()[0].tolist()
        return f"element {at} is negative ({float(got.detach()[tuple(at)]):.4g}); latents of a ReLU SAE are never negative"
    return None


def check_decode(decode) -> None:
    """Check `decode(latents_BF, W_dec_FD, b_dec_D) -> x_hat_BD`, the SAE's decoder."""
    __tracebackhide__ = True
    name = "decode"
    n = 0
    for seed in (0, 1):
        w = _weights(seed)
        gen = generator(seed + 20)
        latents = torch.relu(randn(B, F, gen=gen))
        args = {"latents_BF": latents, "W_dec_FD": w["W_dec_FD"], "b_dec_D": w["b_dec_D"]}
        mine = _leaves(args)
        before = protect(mine)
        got = as_tensor(call(decode, name, list(mine.values()), matmul_hint(ORIENTATION)), name)
        check_unchanged(mine, before, name)
        check_shape(got, (B, D), name, "[B, D] (a reconstruction of each token's activation)")
        check_finite(got, name)
        ref = _leaves(args)
        sae = reference_sae(w["W_enc_FD"], w["b_enc_F"], ref["W_dec_FD"], ref["b_dec_D"])
        want_out = ref["latents_BF"] @ ref["W_dec_FD"] + ref["b_dec_D"]
        with torch.no_grad():
            lib = sae.decode(latents)
        assert torch.allclose(lib, want_out.detach(), atol=1e-6), "reference disagrees with saekit's Sae.decode"
        L, Wd, c = args.values()
        mistakes = [
            Mistake(L @ Wd, "b_dec is not added back: the decoder is latents @ W_dec + b_dec"),
            Mistake(L @ Wd - c, "b_dec is subtracted; the decoder adds it back (latents @ W_dec + b_dec)"),
            Mistake(torch.relu(L @ Wd + c), "there is no ReLU on the reconstruction: activations can be negative"),
        ]
        compare(got, lib, name, mistakes=mistakes)
        check_gradients(got, want_out, name, mine, ref, gen=generator(seed + 30))
        n += 1
    passed(name, n)


def _topk_cases() -> list[tuple[Tensor, int]]:
    gen = generator(40)
    pre = randn(B, F, gen=gen)
    mostly_negative = randn(B, F, gen=gen) - 1.5  # rows with fewer than k positive values: the ReLU matters
    mostly_negative[:, 0] = 2.0
    return [(pre, 3), (mostly_negative, 4), (randn(B, F, gen=gen), 1)]


def reference_topk(pre_BF: Tensor, k: int) -> Tensor:
    """saekit's TopK code (ReLU after TopK, `saes/kernels.topk_encode`), scattered back to [B, F]."""
    eye = torch.eye(pre_BF.shape[1], dtype=pre_BF.dtype)
    acts, idx = topk_encode(pre_BF, eye, torch.zeros(pre_BF.shape[1], dtype=pre_BF.dtype), k)
    return torch.zeros_like(pre_BF).scatter(-1, idx, acts)


def check_topk(topk) -> None:
    """Check `topk(pre_BF, k) -> latents_BF`: keep each row's k largest pre-activations (ReLU'd), zero the rest."""
    __tracebackhide__ = True
    name = "topk"
    cases = _topk_cases()
    for i, (pre, k) in enumerate(cases):
        mine = {"pre_BF": pre.clone().requires_grad_(True)}
        before = protect(mine)
        got = as_tensor(call(topk, name, [mine["pre_BF"], k]), name)
        check_unchanged(mine, before, name)
        check_shape(
            got, (B, F), name, "[B, F] (every latent, zeros where not kept)",
            {(B, k): "that is [B, k]: put the k kept values back at their latent indices in a [B, F] tensor of zeros"},
        )
        check_finite(got, name)
        ref = pre.clone().requires_grad_(True)
        want_out = reference_topk(ref, k)
        with torch.no_grad():
            lib = reference_topk(pre, k)
        vals, idx = pre.topk(k, dim=-1)
        mistakes = [
            Mistake(torch.zeros_like(pre).scatter(-1, idx, vals), "a kept value is negative: apply a ReLU to the kept values"),
            Mistake(_topk_dim0(pre, k), "the k largest are taken down each column (over the batch, dim 0); take them along each row (over latents, dim -1)"),
            Mistake(torch.zeros_like(pre).scatter(-1, pre.topk(k, dim=-1, largest=False).indices, torch.relu(pre.topk(k, dim=-1, largest=False).values)), "you keep the k smallest values; keep the k largest"),
            Mistake(torch.zeros_like(pre).scatter(-1, pre.abs().topk(k, dim=-1).indices, torch.relu(pre.gather(-1, pre.abs().topk(k, dim=-1).indices))), "you rank by absolute value; rank by the signed pre-activation (largest first)"),
            Mistake(torch.relu(pre), "every positive value is kept: keep only the k largest per row"),
        ]
        compare(got, lib, name, mistakes=mistakes, diagnose=lambda g, k=k: _too_many(g, k), what=f" (k={k})")
        check_gradients(
            got, want_out, name, mine, {"pre_BF": ref}, gen=generator(50 + i),
            stray={"pre_BF": "only the kept (non-zero) latents pass gradient back to their pre-activations"},
        )
    passed(name, len(cases))


def _topk_dim0(pre: Tensor, k: int) -> Tensor:
    if k > pre.shape[0]:
        return torch.full_like(pre, float("nan"))
    v, i = pre.topk(k, dim=0)
    return torch.zeros_like(pre).scatter(0, i, torch.relu(v))


def _too_many(got: Tensor, k: int) -> str | None:
    n = (got.detach() != 0).sum(-1)
    if bool((n > k).any()):
        row = int((n > k).nonzero()[0])
        return f"row {row} has {int(n[row])} non-zero latents; at most k={k} may be non-zero"
    return None


__all__ = ["check_encode", "check_decode", "check_topk", "reference_sae", "reference_topk", "B", "D", "F"]
