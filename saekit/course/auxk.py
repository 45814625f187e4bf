"""Exercise: the AuxK loss (Gao et al. 2024), which keeps a TopK SAE's latents from dying.

The reference is saekit's own, `Sae.dead_latent_loss` (saekit/saes/base.py), with weight 1:

    auxk_loss(x_in_BD, err_BD, W_enc_FD, b_enc_F, W_dec_FD, dead_F, k_aux, total_variance)
      pre = x_in @ W_enc[dead].T + b_enc[dead]               only the dead latents' pre-activations [B, G]
      keep each row's k_aux largest, ReLU'd, zeros elsewhere  [B, G]
      err_hat = that @ W_dec[dead]                            the dead latents' reconstruction of the error [B, D]
      return sum ||err_hat - err.detach()||^2 / total_variance     (0 when no latent is dead)

`x_in` is the encoder's input (x - b_dec) and `err` the main reconstruction's error x - x_hat, which arrives
still attached to the main forward's graph: AuxK trains the dead latents only, so it must not push on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import SaeConfig
from ..saes import Sae
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

B, D, F = 5, 6, 10


def reference_sae(W_enc_FD: Tensor, b_enc_F: Tensor, W_dec_FD: Tensor, k_aux: int) -> Sae:
    """saekit's TopK SAE with these weights, AuxK weight 1 and `k_aux`: `dead_latent_loss` is the reference."""
    sae = Sae(SaeConfig(d_in=W_enc_FD.shape[1], n_latents=W_enc_FD.shape[0], k=2, k_aux=k_aux, auxk_alpha=1.0))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc_FD)
        sae.b_enc.copy_(b_enc_F)
        sae.W_dec.copy_(W_dec_FD)
    return sae


def _case(seed: int, n_dead: int, k_aux: int) -> dict:
    gen = generator(seed)
    x = randn(B, D, gen=gen, offset=0.3)
    dead = torch.zeros(F, dtype=torch.bool)
    dead[torch.randperm(F, generator=gen)[:n_dead]] = True
    return {
        "x_in_BD": x,
        "err_BD": randn(B, D, gen=gen, scale=0.5),
        "W_enc_FD": randn(F, D, gen=gen, scale=0.6),
        "b_enc_F": randn(F, gen=gen, scale=0.2),
        "W_dec_FD": randn(F, D, gen=gen, scale=0.6),
        "dead_F": dead,
        "k_aux": k_aux,
        "total_variance": (x - x.mean(0)).pow(2).sum(),
    }


CASES = [(80, 5, 3), (81, 4, 2), (82, 0, 3)]
"""(seed, dead latents, k_aux); the last has no dead latent."""

GRAD_INPUTS = ("W_enc_FD", "b_enc_F", "W_dec_FD")


def check_auxk_loss(auxk_loss) -> None:
    """Check `auxk_loss(x_in_BD, err_BD, W_enc_FD, b_enc_F, W_dec_FD, dead_F, k_aux, total_variance) -> 0-d tensor`."""
    __tracebackhide__ = True
    name = "auxk_loss"
    for seed, n_dead, k_aux in CASES:
        a = _case(seed, n_dead, k_aux)
        mine = {k: (v.clone().requires_grad_(True) if k in GRAD_INPUTS + ("err_BD",) else (v.clone() if isinstance(v, Tensor) else v)) for k, v in a.items()}
        before = protect(mine)
        none_dead = "with no dead latent there is nothing to select: return a zero tensor (e.g. err_BD.new_zeros(()))" if n_dead == 0 else None
        got = as_tensor(call(auxk_loss, name, list(mine.values()), (lambda err: none_dead) if none_dead else _hint), name)
        check_unchanged(mine, before, name)
        check_shape(got, (), name, "a 0-d tensor (one loss for the batch)")
        check_finite(got, name)
        sae = reference_sae(a["W_enc_FD"], a["b_enc_F"], a["W_dec_FD"], k_aux)
        want = sae.dead_latent_loss(a["x_in_BD"], a["err_BD"], a["dead_F"], a["total_variance"])
        if n_dead == 0:
            compare(got, want.detach(), name, what=" with no dead latent")
            continue
        x, err, W, b, Wd, dead, tv = (a[k] for k in ("x_in_BD", "err_BD", "W_enc_FD", "b_enc_F", "W_dec_FD", "dead_F", "total_variance"))
        G = dead.nonzero().squeeze(-1)
        pre_BG = x @ W[G].T + b[G]
        v, j = pre_BG.topk(k_aux, dim=-1)
        right = torch.zeros_like(pre_BG).scatter(-1, j, v.relu()) @ Wd[G]
        pre_BF = x @ W.T + b
        vf, jf = pre_BF.topk(k_aux, dim=-1)
        sq = lambda e_hat: (e_hat - err).pow(2)  # noqa: E731
        mistakes = [
            Mistake(sq(torch.zeros_like(pre_BF).scatter(-1, jf, vf.relu()) @ Wd).sum() / tv, "the k_aux latents are chosen among all latents; choose them among the dead ones only (dead_F)"),
            Mistake(sq(torch.zeros_like(pre_BG).scatter(-1, j, v) @ Wd[G]).sum() / tv, "a selected value is negative: ReLU the k_aux kept pre-activations"),
            Mistake(sq(torch.zeros(B, F).scatter(-1, j, v.relu()) @ Wd).sum() / tv, "the selected indices count within the dead latents, but you decode with W_dec's rows of those numbers; decode with the dead latents' rows (W_dec[dead_F])"),
            Mistake(sq(right).mean() / tv, "the squared error is averaged; sum it (then divide by total_variance, as FVU does)"),
            Mistake(sq(right).mean(), "the squared error is averaged and not divided by total_variance; sum it and divide by total_variance"),
            Mistake(sq(right).sum(), "the squared error is not divided by total_variance"),
            Mistake((right + err).pow(2).sum() / tv, "the dead latents reconstruct minus the error; AuxK compares their reconstruction with err_BD itself"),
            Mistake((right - err).norm() / tv, "that is a norm; AuxK uses the squared error, summed"),
        ]
        compare(got, want.detach(), name, mistakes=mistakes)
        refs = {"W_enc_FD": sae.W_enc, "b_enc_F": sae.b_enc, "W_dec_FD": sae.W_dec, "err_BD": a["err_BD"]}
        check_gradients(
            got, want, name, {k: mine[k] for k in (*GRAD_INPUTS, "err_BD")}, refs, gen=generator(seed + 5),
            must_not_reach={"err_BD": "a gradient flows back into err_BD, which would train the main reconstruction through AuxK: use err_BD.detach()"},
        )
    passed(name, len(CASES), "shape, values, gradients (none into err_BD), inputs left unchanged")


def _hint(err: BaseException) -> str | None:
    text = str(err)
    if "out of range" in text or "selected index" in text:
        return "topk's k cannot exceed the number of values it chooses from (here the dead latents, along dim -1)"
    if "mat1 and mat2" in text or "size mismatch" in text:
        return "W_enc and W_dec are [F, D], one row per latent: take the dead rows first (W_enc[dead_F] is [G, D])"
    return None


__all__ = ["check_auxk_loss", "reference_sae", "CASES"]
