"""The field's metrics as pure functions, and `evaluate()`, which splices an SAE into the model.

Reconstruction: L0, FVU (fraction of variance unexplained), explained variance (1 - FVU), cosine
similarity, dead and dense fractions, feature densities. Downstream, with the reconstruction spliced
in at the SAE's hook point (`Splice(sae, error_term=False)`): CE loss, Delta LM loss, CE-loss recovered
against zero-ablation, and the KL divergence from the clean model. The context separator (BOS) and
padding positions are neither spliced nor scored (BOS activations are outliers no SAE is trained on;
SAELens's evaluations also leave BOS alone).

`evaluate` reads the activation stream (`saekit.stream`) and sums each batch's contributions
(`EvalSums.of_batch`, the per-batch step); `EvalSums.result` reduces the sums to an `EvalResult`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import Document, TokenContexts, contexts, corpus
from .errors import EvalError
from .interventions import Splice, check_fit
from .stream import ActivationBatch, stream_activations
from .tokens import keep_mask

if TYPE_CHECKING:
    from .lm import Model

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


@dataclass
class EvalSums:
    """Running sums of an evaluation: what each batch adds (`of_batch`), merged with `+`, reduced by `result`."""

    fired: Tensor
    """[F] tokens on which each latent was active."""
    n: int = 0
    """Scored activations (kept tokens)."""
    err: float = 0.0
    """Sum of squared reconstruction errors."""
    cos: float = 0.0
    """Sum of cosine similarities between activation and reconstruction."""
    l0: float = 0.0
    """Sum of active latents."""
    x_sum: Tensor | None = None
    """[D] sum of activations (float64), for the total variance."""
    x_sqsum: float = 0.0
    """Sum of squared activations."""
    n_ce: int = 0
    """Scored next-token predictions."""
    ce_clean: float = 0.0
    ce_spliced: float = 0.0
    ce_zero: float = 0.0
    kl: float = 0.0

    @classmethod
    def of_batch(cls, model: Model, sae, batch: ActivationBatch, hookpoint: str, splice: Splice) -> "EvalSums":
        """One batch's contributions, the readable reference way: reconstruction of its kept activations
        (read by a separate early-stopped capture), and the next-token losses of the clean model and the
        model with `splice` applied (one forward, two invokes, with the full next-token distributions for
        the KL), and with the hook point zero-ablated (a second forward). For a transcoder the
        reconstruction is its prediction of `cfg.target_hookpoint` (the MLP's output) from `hookpoint`
        (its input), and the zero-ablated run zeroes the target (the MLP's output). `of_runs` is the fast
        path `evaluate` takes; the tests hold the two equal."""
        ablated = _ablated_hookpoint(sae, hookpoint)
        ids_BT, mask_BT = batch.input_ids.to(model.device), batch.attention_mask.to(model.device)
        runs = model.compare(ids_BT, splice, mask_BT, tokens=range(model.vocab_size), top=0)
        kl_BT = kl_divergence(runs.pop("logp_clean")[:, :-1], runs.pop("logp_edited")[:, :-1])
        nll_zero = model.token_nll(ids_BT, mask_BT, edits={ablated: _zero_at(batch.keep)})
        return cls._of(sae, batch, hookpoint, runs["nll_clean"], runs["nll_edited"], nll_zero, kl_BT)

    @classmethod
    def of_runs(cls, model: Model, sae, ids_BT: Tensor, mask_BT: Tensor, keep_BT: Tensor, context: Tensor,
                hookpoint: str, splice: Splice) -> "EvalSums":
        """One batch's contributions the fast way (`Model.score_runs`): the clean, spliced and zero-ablated
        runs stacked in one local forward whose blocks before the hook point run once, the activations read
        inside the clean run, the losses and KL from the head applied in vocabulary chunks (no logits kept).
        Same sums as `of_batch` up to float rounding."""
        return cls.of_runs_many(model, [sae], ids_BT, mask_BT, keep_BT, context, [hookpoint], [splice])[0]

    @classmethod
    def of_runs_many(cls, model: Model, saes: Sequence, ids_BT: Tensor, mask_BT: Tensor, keep_BT: Tensor,
                     context: Tensor, hookpoints: Sequence[str], splices: Sequence[Splice]) -> list["EvalSums"]:
        """`of_runs` for several SAEs at once, each sum as `of_runs` alone gives it: one forward holds the clean
        run, one spliced run per SAE and one zero-ablated run per distinct ablated site that is not the whole
        residual stream (a transcoder's MLP output); a zero-ablated residual stream runs apart on one row per group
        of rows with the same losses (`_zero_stream_nll`). The clean run, the zero ablations and the blocks before
        the earliest hook point are computed once for all the SAEs, so each added SAE costs the blocks after its
        hook point and one vocabulary head."""
        ablated = [_ablated_hookpoint(sae, hp) for sae, hp in zip(saes, hookpoints)]
        zero_sites = list(dict.fromkeys(ablated))
        reads: list[str] = []
        for sae, hp in zip(saes, hookpoints):
            target = getattr(sae.cfg, "target_hookpoint", None)
            reads += [hp] if target is None else [hp, target]
        whole_stream = [s for s in zero_sites if model.resolve(s).kind in WHOLE_STREAM_KINDS]
        in_forward = [s for s in zero_sites if s not in whole_stream]
        runs = [*splices, *({site: _zero_at(keep_BT)} for site in in_forward)]
        out = model.score_runs(ids_BT, runs, mask_BT, reads=list(dict.fromkeys(reads)))
        kept = {h: a_BTD[keep_BT.to(a_BTD.device)].float() for h, a_BTD in out["acts"].items()}  # [N, D] each
        nll, kl = out["nll"].cpu(), out["kl"].cpu()  # [R, B, T-1]: clean, the splices, the other zero ablations
        n = len(saes)
        nll_zero = {site: nll[1 + n + in_forward.index(site)] for site in in_forward}
        nll_zero.update({site: _zero_stream_nll(model, site, ids_BT, mask_BT, keep_BT) for site in whole_stream})
        sums = []
        for i, (sae, hp) in enumerate(zip(saes, hookpoints)):
            acts = {h: a_ND.to(sae.device) for h, a_ND in kept.items()}
            batch = ActivationBatch(acts, ids_BT, mask_BT, keep_BT, context)
            sums.append(cls._of(sae, batch, hp, nll[0], nll[1 + i], nll_zero[ablated[i]], kl[1 + i]))
        return sums

    @classmethod
    def _of(cls, sae, batch: ActivationBatch, hookpoint: str, nll_clean: Tensor, nll_splice: Tensor,
            nll_zero: Tensor, kl_BT: Tensor) -> "EvalSums":
        """The sums of one batch, given its kept activations and per-position losses [B, T-1]."""
        target = getattr(sae.cfg, "target_hookpoint", None)
        if target is None:
            x_ND = batch.acts[hookpoint]
            with torch.no_grad():
                latents_NF = sae.encode(x_ND)
                x_hat_ND = sae.decode(latents_NF).float()
        else:  # a transcoder: its prediction of the target from the input, scored against the target
            x_ND, src_ND = batch.acts[target], batch.acts[hookpoint]
            with torch.no_grad():
                latents_NF = sae.encode(src_ND)
                x_hat_ND = sae.reconstruct(src_ND).float()
        x, x_hat = x_ND.double(), x_hat_ND.double()
        score_BT = batch.attention_mask[:, 1:].bool()  # next-token predictions whose target is a real token
        return cls(
            fired=(latents_NF > 0).sum(0).cpu(),
            n=x_ND.shape[0],
            err=float((x_ND - x_hat_ND).double().pow(2).sum()),
            cos=float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum()),
            l0=float((latents_NF != 0).sum()),
            x_sum=x.sum(0),
            x_sqsum=float(x.pow(2).sum()),
            n_ce=int(score_BT.sum()),
            ce_clean=float(nll_clean[score_BT].sum()),
            ce_spliced=float(nll_splice[score_BT].sum()),
            ce_zero=float(nll_zero[score_BT].sum()),
            kl=float(kl_BT[score_BT].sum()),
        )

    def __add__(self, other: "EvalSums") -> "EvalSums":
        x_sum = other.x_sum if self.x_sum is None else self.x_sum + other.x_sum
        return EvalSums(
            self.fired + other.fired, self.n + other.n, self.err + other.err, self.cos + other.cos,
            self.l0 + other.l0, x_sum, self.x_sqsum + other.x_sqsum, self.n_ce + other.n_ce,
            self.ce_clean + other.ce_clean, self.ce_spliced + other.ce_spliced, self.ce_zero + other.ce_zero,
            self.kl + other.kl,
        )

    def result(self, d_in: int) -> EvalResult:
        """The metrics these sums stand for, for an SAE of input width `d_in`."""
        n, n_ce = self.n, max(self.n_ce, 1)
        total_var = self.x_sqsum - float((self.x_sum**2).sum()) / n
        fvu_ = self.err / max(total_var, 1e-30)
        density_F = self.fired.double() / n
        ce_c, ce_s, ce_z = self.ce_clean / n_ce, self.ce_spliced / n_ce, self.ce_zero / n_ce
        return EvalResult(
            n_tokens=n,
            l0=self.l0 / n,
            fvu=fvu_,
            explained_variance=1 - fvu_,
            cosine_similarity=self.cos / n,
            mse=self.err / (n * d_in),
            dead_fraction=float((self.fired == 0).double().mean()),
            dense_fraction=float((density_F > DENSE_THRESHOLD).double().mean()),
            ce_clean=ce_c,
            ce_spliced=ce_s,
            ce_zero_ablation=ce_z,
            delta_lm_loss=ce_s - ce_c,
            ce_loss_recovered=ce_loss_recovered(ce_c, ce_s, ce_z),
            kl_divergence=self.kl / n_ce,
            density=density_F.float(),
        )


def evaluate(
    model: Model,
    sae,
    texts: Iterable[Document] | Sequence[str] | TokenContexts | None = None,
    *,
    hookpoint: str | None = None,
    n_tokens: int = 8192,
    context_len: int = 128,
    batch_size: int = 4,
    progress: bool = True,
    reference: bool = False,
) -> EvalResult:
    """Evaluate `sae` at its hook point on held-out text (default: the built-in corpus's test split).
    A transcoder is scored on its prediction of `cfg.target_hookpoint`: FVU against the MLP's output,
    and CE-loss recovered with the prediction spliced in for the MLP's output (zero-ablation baseline:
    the MLP's output set to zero).

    A local model takes the fast path (`EvalSums.of_runs`: one forward per batch for the clean and spliced runs,
    no logits kept; a zero ablation of the residual stream runs once per group of rows it gives the same losses,
    one row per batch of BOS-led contexts, `_zero_stream_nll`); `reference=True`, or a remote model, takes the readable one (`EvalSums.of_batch`: an
    early-stopped capture, then the clean and spliced runs and the zero-ablated run through nnsight).
    Both give the same metrics up to float rounding (tests/test_fast_eval.py). Several SAEs on the same
    text: `evaluate_many`, which shares the clean and zero-ablated runs between them."""
    hookpoint = check_fit(model, sae, hookpoint)
    ctx = _contexts(model, texts, n_tokens, context_len)
    if reference or model.remote:
        return _evaluate_reference(model, sae, hookpoint, ctx, batch_size, progress)
    return _evaluate_local(model, [sae], [hookpoint], ctx, batch_size, progress)[0]


def evaluate_many(
    model: Model,
    saes: Sequence | Mapping[str, Any],
    texts: Iterable[Document] | Sequence[str] | TokenContexts | None = None,
    *,
    n_tokens: int = 8192,
    context_len: int = 128,
    batch_size: int = 4,
    progress: bool = True,
    reference: bool = False,
) -> list[EvalResult] | dict[str, EvalResult]:
    """`evaluate` for several SAEs (each at its own hook point) on the same held-out tokens: a list of results
    for a list of SAEs, a dict for a dict of named SAEs. Each result is the one `evaluate` gives that SAE alone
    (up to float rounding; tests/test_fast_eval.py). On a local model every batch is one forward with the clean
    run, one spliced run per SAE and one zero-ablated run per distinct site (at most `RUNS_PER_FORWARD` runs;
    more SAEs take more forwards), so the clean run and the blocks before the earliest hook point are shared, and
    SAEs at the same hook point share the zero ablation too: each of those beyond the first costs the blocks after
    the hook point and one vocabulary head instead of a whole `evaluate` (six SAEs at resid_post.6: 2.2x faster
    than `evaluate` on each, 3.7x the reference path; five at different hook points: 1.1x; BENCHMARKS.md,
    "evaluate_many").
    `reference=True` or a remote model: `evaluate` on each SAE in turn."""
    named = isinstance(saes, Mapping)
    sae_list = list(saes.values()) if named else list(saes)
    if not sae_list:
        raise EvalError("evaluate_many got no SAEs: pass a list (or a dict of named SAEs) with at least one")
    hookpoints = [check_fit(model, sae, None) for sae in sae_list]
    ctx = _contexts(model, texts, n_tokens, context_len)
    if reference or model.remote:
        results = [_evaluate_reference(model, s, h, ctx, batch_size, progress) for s, h in zip(sae_list, hookpoints)]
    else:
        results = _evaluate_local(model, sae_list, hookpoints, ctx, batch_size, progress)
    return dict(zip(saes.keys(), results)) if named else results


RUNS_PER_FORWARD = 8
"""At most this many runs (clean, spliced, zero-ablated) stacked in one forward of `evaluate_many`: the stacked
batch's activations grow with the runs, so a long list of SAEs is split into groups that each repeat the clean run."""


def _contexts(model: Model, texts, n_tokens: int, context_len: int) -> TokenContexts:
    if isinstance(texts, TokenContexts):
        return texts
    return contexts(model, corpus(split="test") if texts is None else texts, context_len=context_len, n_tokens=n_tokens)


def _evaluate_reference(model: Model, sae, hookpoint: str, ctx: TokenContexts, batch_size: int, progress: bool) -> EvalResult:
    """The readable path: `EvalSums.of_batch` on each batch of the activation stream."""
    splice = Splice(_reading(sae, hookpoint), error_term=False)
    target = getattr(sae.cfg, "target_hookpoint", None)
    reads = [hookpoint] if target is None else [hookpoint, check_fit(model, sae, target)]
    sums = EvalSums(fired=torch.zeros(sae.n_latents, dtype=torch.long))
    with tqdm(total=len(ctx), desc="evaluate", unit="ctx", disable=not progress) as bar:
        for batch in stream_activations(model, ctx, reads, batch_size=batch_size, device=sae.device):
            sums = sums + EvalSums.of_batch(model, sae, batch, hookpoint, splice)
            bar.update(len(batch.context))
    return sums.result(sae.d_in)


def _evaluate_local(model: Model, saes: list, hookpoints: list[str], ctx: TokenContexts, batch_size: int,
                    progress: bool) -> list[EvalResult]:
    """The fast path: `EvalSums.of_runs_many` on each batch, the SAEs in groups of at most `RUNS_PER_FORWARD` runs."""
    splices = [Splice(_reading(s, h), error_term=False) for s, h in zip(saes, hookpoints)]
    groups: list[list[int]] = []
    for i in range(len(saes)):
        if groups:
            trial = groups[-1] + [i]
            sites = {_ablated_hookpoint(saes[j], hookpoints[j]) for j in trial}
            if 1 + len(trial) + len(sites) <= RUNS_PER_FORWARD:  # clean + splices + zero ablations
                groups[-1] = trial
                continue
        groups.append([i])
    sums = [EvalSums(fired=torch.zeros(s.n_latents, dtype=torch.long)) for s in saes]
    keep_NT = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    desc = "evaluate" if len(saes) == 1 else f"evaluate {len(saes)} SAEs"
    with tqdm(total=len(ctx), desc=desc, unit="ctx", disable=not progress) as bar:
        for s in range(0, len(ctx), batch_size):
            sl = slice(s, s + batch_size)
            ids_BT, mask_BT, keep_BT = ctx.input_ids[sl], ctx.attention_mask[sl], keep_NT[sl]
            context = torch.arange(s, s + len(ids_BT))
            for group in groups:
                new = EvalSums.of_runs_many(model, [saes[i] for i in group], ids_BT, mask_BT, keep_BT, context,
                                            [hookpoints[i] for i in group], [splices[i] for i in group])
                for i, part in zip(group, new):
                    sums[i] = sums[i] + part
            bar.update(len(ids_BT))
    return [total.result(sae.d_in) for total, sae in zip(sums, saes)]


def _reading(sae, hookpoint: str):
    """`sae` itself when it reads `hookpoint` (its `cfg.hookpoint`), else a shallow copy sharing its weights
    whose config names `hookpoint`, so that `Splice` acts where `evaluate(hookpoint=...)` was asked to."""
    if sae.cfg.hookpoint == hookpoint:
        return sae
    placed = copy.copy(sae)
    placed.cfg = replace(sae.cfg, hookpoint=hookpoint)
    return placed


def _ablated_hookpoint(sae, hookpoint: str) -> str:
    """Where the zero-ablation baseline acts: the hook point, or for a transcoder the target it replaces."""
    target = getattr(sae.cfg, "target_hookpoint", None)
    return hookpoint if target is None else target


WHOLE_STREAM_KINDS = ("embed", "resid_pre", "resid_post")
"""Hook points that carry the whole residual stream: zeroing one at a position erases what that position knows of
its tokens (`_zero_stream_nll`). That holds for decoder-only models whose blocks read nothing but the residual stream
(every model `hookpoints.py` resolves); a model that feeds token embeddings into later layers again (Gemma 3n's
per-layer inputs) would break it, and `evaluate(reference=True)` is the check."""


def _zero_stream_nll(model: Model, site: str, ids_BT: Tensor, mask_BT: Tensor, keep_BT: Tensor) -> Tensor:
    """Next-token NLL [B, T-1] with the residual stream zeroed at `site` where `keep_BT`, computed once per group of
    rows that give the same losses. Past the site a position sees only zeros and the untouched positions (BOS and
    anything the mask hides), and causal attention never looks ahead. So two rows agree at every position they both
    attend if they agree on the tokens and `keep` up to their last untouched attended position, and a right-padded
    row is a prefix of a longer one: one run of the group's longest row, scored on each row's own next tokens,
    gives every row's losses (in a batch of contexts that each start with BOS: one run for all). The blocks and the
    head run on those rows alone instead of all B (`evaluate`'s third vocabulary head, mostly gone). Positions a row
    does not attend get another row's values; nothing scores them."""
    keep, mask, ids = keep_BT.bool().cpu(), mask_BT.bool().cpu(), ids_BT.cpu()
    lengths = mask.sum(-1)
    right_padded = (mask == (torch.arange(mask.shape[1]) < lengths[:, None])).all(-1)
    members: dict[tuple, list[int]] = {}  # rows by what their losses depend on
    for b in range(ids.shape[0]):
        seen = (mask[b] & ~keep[b]).nonzero()
        last = int(seen[-1]) + 1 if len(seen) else 0
        key = (keep[b, :last].numpy().tobytes(), ids[b, :last].numpy().tobytes(),
               None if right_padded[b] else mask[b].numpy().tobytes())
        members.setdefault(key, []).append(b)
    groups = [sorted(m, key=lambda b: -int(lengths[b])) for m in members.values()]  # longest row first: it runs
    K = max(len(g) for g in groups)
    slot = {b: (u, j) for u, g in enumerate(groups) for j, b in enumerate(g)}
    targets_UTK = torch.stack([ids[[*g, *[g[0]] * (K - len(g))], 1:].t() for g in groups])  # each member's next tokens
    rows = torch.tensor([g[0] for g in groups])
    out = model.score_runs(ids_BT[rows], [{site: _zero_at(keep_BT[rows])}], mask_BT[rows], kl=False,
                           score_clean=False, targets=targets_UTK)
    nll_UTK = out["nll"][1].cpu()
    return torch.stack([nll_UTK[slot[b][0], :, slot[b][1]] for b in range(ids.shape[0])])


def _zero_at(keep_BT: Tensor):
    """An edit that zero-ablates the positions `keep` marks and leaves the others alone."""

    def edit(acts_BTD: Tensor) -> Tensor:
        return torch.where(keep_BT[..., None].to(acts_BTD.device), torch.zeros((), device=acts_BTD.device, dtype=acts_BTD.dtype), acts_BTD)

    return edit


__all__ = [
    "EvalResult",
    "EvalSums",
    "evaluate",
    "evaluate_many",
    "RUNS_PER_FORWARD",
    "l0",
    "fvu",
    "total_variance",
    "cosine_similarity",
    "ce_loss_recovered",
    "kl_divergence",
    "density_histogram",
    "DENSE_THRESHOLD",
]
