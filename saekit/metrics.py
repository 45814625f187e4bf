"""The field's metrics as pure functions, and `evaluate()`, which splices an SAE into the model.

Reconstruction: L0, FVU (fraction of variance unexplained), explained variance (1 - FVU), cosine
similarity, dead and dense fractions, feature densities. Downstream, with the reconstruction spliced
in at the SAE's hook point: CE loss, Delta LM loss, CE-loss recovered against zero-ablation, and the
KL divergence from the clean model. BOS and padding positions are neither spliced nor scored
(BOS activations are outliers no SAE is trained on; SAELens's evaluations also leave BOS alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import Document, TokenContexts, contexts, corpus
from .interventions import check_fit
from .tokens import keep_mask

DENSE_THRESHOLD = 0.1
"""A latent active on more than this fraction of tokens counts as dense."""


# -- pure functions --------------------------------------------------------------------------------


def l0(latents_NF: Tensor) -> float:
    """Mean number of non-zero latents per token."""
    return float((latents_NF != 0).sum(-1).float().mean())


def total_variance(x_ND: Tensor) -> Tensor:
    """sum ||x - mean(x)||^2 over the rows (at least 1e-12): FVU's denominator, and the scale every saekit
    training objective is divided by."""
    return (x_ND - x_ND.mean(0)).pow(2).sum().clamp_min(1e-12)


def fvu(x_ND: Tensor, x_hat_ND: Tensor, total_var: Tensor | None = None) -> Tensor:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, a scalar tensor
    (`float(fvu(...))` for a number). Differentiable, in the inputs' dtype: the one FVU, also the SAEs'
    training loss, which passes `total_var` (= `total_variance(x)`) when it has it already."""
    return (x_ND - x_hat_ND).pow(2).sum() / (total_variance(x_ND) if total_var is None else total_var)


def cosine_similarity(x_ND: Tensor, x_hat_ND: Tensor) -> float:
    """Mean cosine similarity between each activation and its reconstruction."""
    return float(torch.nn.functional.cosine_similarity(x_ND.detach().double(), x_hat_ND.detach().double(), dim=-1).mean())


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_zero: float) -> float:
    """(CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 is perfect, 0 is no better than zero-ablation."""
    return (ce_zero - ce_spliced) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan")


def kl_divergence(logp_clean: Tensor, logp_edit: Tensor) -> Tensor:
    """KL(clean || edited) per position, from log-probabilities [..., V]."""
    return (logp_clean.exp() * (logp_clean - logp_edit)).sum(-1)


def density_histogram(density_F: Tensor, bins: int = 50, lo: float = -8.0) -> dict[str, list[float]]:
    """Histogram of log10 feature density (dead latents counted apart): plain data for a plot."""
    alive = density_F[density_F > 0]
    logd = alive.double().log10().clamp_min(lo)
    counts, edges = torch.histogram(logd, bins=bins, range=(lo, 0.0))
    return {"edges": edges.tolist(), "counts": counts.tolist(), "dead": int((density_F == 0).sum())}


# -- evaluate ---------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """What `evaluate` measured, on `n_tokens` held-out tokens."""

    n_tokens: int
    l0: float
    fvu: float
    explained_variance: float
    cosine_similarity: float
    mse: float
    dead_fraction: float
    dense_fraction: float
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    delta_lm_loss: float
    ce_loss_recovered: float
    kl_divergence: float
    density: Tensor = field(repr=False)
    """Fraction of evaluated tokens on which each latent was active [F]."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("density")
        return d

    def density_histogram(self, bins: int = 50) -> dict[str, list[float]]:
        return density_histogram(self.density, bins)

    def table(self) -> str:
        rows = [(k, v) for k, v in self.to_dict().items()]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v:.4f}" if isinstance(v, float) else f"{k:<{w}}  {v}" for k, v in rows)

    def plot_density(self, ax=None):
        """Matplotlib histogram of log10 feature density."""
        import matplotlib.pyplot as plt

        h = self.density_histogram()
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        edges = h["edges"]
        ax.bar(edges[:-1], h["counts"], width=edges[1] - edges[0], align="edge")
        ax.set_xlabel("log10 feature density")
        ax.set_ylabel("latents")
        ax.set_title(f"feature density ({h['dead']} dead)")
        return ax


def evaluate(
    model,
    sae,
    texts: Iterable[Document] | Sequence[str] | TokenContexts | None = None,
    *,
    hookpoint: str | None = None,
    n_tokens: int = 8192,
    context_len: int = 128,
    batch_size: int = 4,
    progress: bool = True,
) -> EvalResult:
    """Evaluate `sae` at its hook point on held-out text (default: the built-in corpus's test split)."""
    hookpoint = check_fit(model, sae, hookpoint)
    if isinstance(texts, TokenContexts):
        ctx = texts
    else:
        ctx = contexts(model, corpus(split="test") if texts is None else texts, context_len=context_len, n_tokens=n_tokens)
    device = model.device
    bos = model.separator_id
    F_ = sae.n_latents
    fired_F = torch.zeros(F_, dtype=torch.long)
    sums = {"err": 0.0, "cos": 0.0, "l0": 0.0, "n": 0, "ce_clean": 0.0, "ce_spliced": 0.0, "ce_zero": 0.0, "kl": 0.0, "n_ce": 0}
    xs_sum = None
    xs_sqsum = 0.0
    bar = tqdm(total=len(ctx), desc="evaluate", unit="ctx", disable=not progress)
    for s in range(0, len(ctx), batch_size):
        ids_BT = ctx.input_ids[s : s + batch_size].to(device)
        mask_BT = ctx.attention_mask[s : s + batch_size].to(device)
        keep_BT = keep_mask(ids_BT, mask_BT, bos)
        acts_BTD = model.capture(ids_BT, [hookpoint], attention_mask=mask_BT)[hookpoint].float()
        x_ND = acts_BTD[keep_BT]
        with torch.no_grad():
            latents_NF = sae.encode(x_ND)
            x_hat_ND = sae.decode(latents_NF).float()
        fired_F += (latents_NF > 0).sum(0).cpu()
        sums["err"] += float((x_ND - x_hat_ND).double().pow(2).sum())
        sums["cos"] += float(torch.nn.functional.cosine_similarity(x_ND.double(), x_hat_ND.double(), dim=-1).sum())
        sums["l0"] += float((latents_NF != 0).sum())
        sums["n"] += x_ND.shape[0]
        xs_sum = x_ND.double().sum(0) if xs_sum is None else xs_sum + x_ND.double().sum(0)
        xs_sqsum += float(x_ND.double().pow(2).sum())

        x_hat_BTD = acts_BTD.clone()
        x_hat_BTD[keep_BT] = x_hat_ND
        splice = _replace_at(keep_BT, x_hat_BTD)
        zero = _replace_at(keep_BT, torch.zeros_like(acts_BTD))
        # score next-token predictions whose target is a real token
        score_BT = mask_BT[:, 1:].bool()
        nll_clean, logp_clean = model.token_nll(ids_BT, mask_BT, return_logprobs=True)
        nll_splice, logp_splice = model.token_nll(ids_BT, mask_BT, edits={hookpoint: splice}, return_logprobs=True)
        kl_BT = kl_divergence(logp_clean[:, :-1], logp_splice[:, :-1])
        del logp_clean, logp_splice
        nll_zero = model.token_nll(ids_BT, mask_BT, edits={hookpoint: zero})
        sums["ce_clean"] += float(nll_clean[score_BT].sum())
        sums["ce_spliced"] += float(nll_splice[score_BT].sum())
        sums["ce_zero"] += float(nll_zero[score_BT].sum())
        sums["kl"] += float(kl_BT[score_BT].sum())
        sums["n_ce"] += int(score_BT.sum())
        bar.update(len(ids_BT))
    bar.close()
    n, n_ce = sums["n"], max(sums["n_ce"], 1)
    total_var = xs_sqsum - float((xs_sum**2).sum()) / n
    fvu_ = sums["err"] / max(total_var, 1e-30)
    density_F = fired_F.double() / n
    ce_c, ce_s, ce_z = sums["ce_clean"] / n_ce, sums["ce_spliced"] / n_ce, sums["ce_zero"] / n_ce
    return EvalResult(
        n_tokens=n,
        l0=sums["l0"] / n,
        fvu=fvu_,
        explained_variance=1 - fvu_,
        cosine_similarity=sums["cos"] / n,
        mse=sums["err"] / (n * sae.d_in),
        dead_fraction=float((fired_F == 0).double().mean()),
        dense_fraction=float((density_F > DENSE_THRESHOLD).double().mean()),
        ce_clean=ce_c,
        ce_spliced=ce_s,
        ce_zero_ablation=ce_z,
        delta_lm_loss=ce_s - ce_c,
        ce_loss_recovered=ce_loss_recovered(ce_c, ce_s, ce_z),
        kl_divergence=sums["kl"] / n_ce,
        density=density_F.float(),
    )


def _replace_at(keep_BT: Tensor, new_BTD: Tensor):
    """An edit that puts `new` where `keep` is set and leaves the other positions alone."""

    def edit(acts_BTD: Tensor) -> Tensor:
        return torch.where(keep_BT[..., None].to(acts_BTD.device), new_BTD.to(acts_BTD.device, acts_BTD.dtype), acts_BTD)

    return edit


__all__ = [
    "EvalResult",
    "evaluate",
    "l0",
    "fvu",
    "total_variance",
    "cosine_similarity",
    "ce_loss_recovered",
    "kl_divergence",
    "density_histogram",
    "DENSE_THRESHOLD",
]
