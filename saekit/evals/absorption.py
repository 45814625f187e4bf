"""Feature absorption (Chanin et al. 2024, "A is for Absorption"), measured as SAEBench does, on first letters.

Data (`spelling.py`): single-token words read in a few-shot "<word> has the first letter: X" prompt, activations
at the word's token, words split 80/20 into training and held-out words.

For each letter L (`first_letter_absorption`, a pure function of activations, latents, decoder and labels):

1. **Probe**: a logistic regression "starts with L" on the hook point's activations of the training words
   (one-vs-rest, balanced classes: SAEBench's BCE with positive weight; saekit centres the activations and
   scales them by one number to unit root-mean-square per dimension, which keeps the probe's direction that of
   the raw activations). Its held-out F1 says whether the model
   represents the letter there; letters with F1 <= `min_probe_f1` are reported but left out of the means.
2. **Main latents**: k-sparse probing over the SAE latents and feature splitting (`kprobe.py`): the latents that
   together detect L, adding one while held-out F1 rises by more than `f1_jump`.
3. On the **true positives** (held-out L-words the probe classifies as L), with p the unit probe direction, the
   word's probe projection x.p and each latent's share of it z_f (W_dec[f].p) (SAEBench writes z_f cos(W_dec[f], p),
   the same number for unit-norm decoder rows; saekit's folded decoders need not be unit norm):
   - **full absorption**: no main latent fires, x.p > 0, and the latent with the largest share has decoder cosine
     >= `full_min_cos` with p and carries >= `min_share` of x.p;
   - **absorption fraction** (partial absorption): the share of x.p carried by non-main latents, over the
     main latents' and theirs: up to `max_absorbers` non-main latents with cosine >= `fraction_min_cos` and a
     positive share are the absorbers; if the main latents carry all of x.p, or the absorbers less than
     `min_share` of it, the fraction is 0; if the main latents carry nothing (or less), it is 1; otherwise
     a / (a + m), a = min(absorbers' share, x.p - m), m the main latents' share.

Per letter: the full absorption rate (fully absorbed / true positives) and the mean absorption fraction; overall:
their means over the letters whose probe F1 passes (SAEBench's mean_full_absorption_score and
mean_absorption_fraction_score), and the mean number of split latents. SAEBench also declines to score a model
with fewer than 20 such letters; saekit reports how many there are (`attrs['n_letters']`) and leaves the
judgement to the reader.
"""

from __future__ import annotations

import string
from typing import Sequence

import torch
from torch import Tensor

from ..errors import EvalError
from .activations import hookpoint_of
from .kprobe import F1_JUMP, MAX_K, k_sparse_f1, l1_latent_weights, ranking_keys, split_latents
from .spelling import N_ICL, SpellingSet, spelling_set

FULL_MIN_COS = 0.025
"""Full absorption: least cosine between the top latent's decoder and the probe (SAEBench)."""

FRACTION_MIN_COS = 0.1
"""Absorption fraction: least cosine between an absorbing latent's decoder and the probe (SAEBench)."""

MIN_SHARE = 0.4
"""Both metrics: least share of the word's probe projection the absorbing latent(s) must carry (SAEBench)."""

MAX_ABSORBERS = 3
"""Absorption fraction: most non-main latents counted as absorbing one word (SAEBench)."""

MIN_PROBE_F1 = 0.6
"""Letters whose probe has held-out F1 at most this are left out of the means (SAEBench's min_GT_probe_f1)."""

EPS = 1e-8


def word_absorption(acts_ND: Tensor, latents_NF: Tensor, W_dec_FD: Tensor, probe_D: Tensor, main: Sequence[int], *,
                    full_min_cos: float = FULL_MIN_COS, fraction_min_cos: float = FRACTION_MIN_COS,
                    min_share: float = MIN_SHARE, max_absorbers: int = MAX_ABSORBERS) -> tuple[Tensor, Tensor, Tensor]:
    """(full_N: bool, fraction_N: float, top_N: the latent with the largest share) of each word (rows) for one
    letter's probe direction and main latents (module docstring, step 3)."""
    if not len(main):
        raise EvalError("word_absorption needs at least one main latent")
    p_D = probe_D.float() / probe_D.float().norm().clamp_min(EPS)
    W = W_dec_FD.float()
    proj_F = W @ p_D
    cos_F = proj_F / W.norm(dim=-1).clamp_min(EPS)
    share_NF = latents_NF.float() * proj_F[None]
    total_N = acts_ND.float() @ p_D
    main_t = torch.as_tensor(list(main), dtype=torch.long)
    is_main_F = torch.zeros(W.shape[0], dtype=torch.bool)
    is_main_F[main_t] = True
    # full absorption: one latent does what the main latents do not
    main_silent_N = (latents_NF[:, main_t].abs() < EPS).all(1)
    top_share_N, top_N = share_NF.max(1)
    safe_total_N = torch.where(total_N.abs() > EPS, total_N, torch.full_like(total_N, EPS))
    full_N = main_silent_N & (total_N > 0) & (cos_F[top_N] >= full_min_cos) & (top_share_N / safe_total_N >= min_share)
    # absorption fraction: up to max_absorbers aligned non-main latents share the direction with the main ones
    m_N = share_NF[:, main_t].sum(1)
    cand_NF = (~is_main_F & (cos_F >= fraction_min_cos))[None] & (share_NF > 0)
    a_NF = torch.where(cand_NF, share_NF, torch.zeros_like(share_NF))
    a_N = a_NF.topk(min(max_absorbers, a_NF.shape[1]), dim=1).values.sum(1)
    none_N = (total_N <= 0) | (m_N >= total_N) | (a_N / safe_total_N < min_share)
    absorbed_N = torch.minimum(a_N, total_N - m_N)
    frac_N = (absorbed_N / (absorbed_N + m_N).clamp_min(EPS)).clamp(0, 1)
    frac_N = torch.where(m_N <= 0, torch.ones_like(frac_N), frac_N)
    frac_N = torch.where(none_N, torch.zeros_like(frac_N), frac_N)
    return full_N, frac_N, top_N


def first_letter_absorption(acts_ND: Tensor, latents_NF: Tensor, W_dec_FD: Tensor, letters: Sequence[str],
                            train: Sequence[int], test: Sequence[int], *, min_words: int = 10,
                            min_probe_f1: float = MIN_PROBE_F1, max_k: int = MAX_K, f1_jump: float = F1_JUMP,
                            full_min_cos: float = FULL_MIN_COS, fraction_min_cos: float = FRACTION_MIN_COS,
                            min_share: float = MIN_SHARE, max_absorbers: int = MAX_ABSORBERS):
    """Absorption per letter (module docstring) from activations [N, D], SAE latents [N, F], the decoder [F, D] and
    each row's label (`letters`, any strings: the classes) with training/held-out row indices. A DataFrame, one
    row per letter with at least `min_words` training and 3 held-out words; `attrs` holds the overall scores."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    N = len(letters)
    if acts_ND.shape[0] != N or latents_NF.shape[0] != N or latents_NF.shape[1] != W_dec_FD.shape[0] \
            or acts_ND.shape[1] != W_dec_FD.shape[1]:
        raise EvalError(f"shapes disagree: activations {tuple(acts_ND.shape)}, latents {tuple(latents_NF.shape)}, "
                        f"decoder {tuple(W_dec_FD.shape)}, {N} labels; want [N, D], [N, F], [F, D], N")
    if set(train) & set(test):
        raise EvalError("training and held-out words overlap: split them")
    tr, te = torch.as_tensor(list(train), dtype=torch.long), torch.as_tensor(list(test), dtype=torch.long)
    names = sorted(set(letters))
    cls_N = torch.tensor([names.index(c) for c in letters])
    counts = {c: (int((cls_N[tr] == i).sum()), int((cls_N[te] == i).sum())) for i, c in enumerate(names)}
    kept = [c for c in names if counts[c][0] >= min_words and counts[c][1] >= 3]
    if not kept:
        raise EvalError(f"no letter has {min_words} training and 3 held-out words: lower min_words or raise n_words")
    x_ND = acts_ND.float()
    # the probe reads centred activations scaled by one number, to a root-mean-square of 1 per dimension, so that
    # the L2 penalty (C = 1) neither drowns the signal nor tilts the direction (per-dimension standardising would
    # weight the residual stream's low-variance dimensions up and turn the probe away from every decoder row)
    mu_D = x_ND[tr].mean(0)
    scale = ((x_ND[tr] - mu_D).norm(dim=-1).mean() / x_ND.shape[1] ** 0.5).clamp_min(EPS)
    X = ((x_ND - mu_D) / scale).numpy()
    z_NF = latents_NF.float()
    ranking_CF = ranking_keys(l1_latent_weights(z_NF[tr], cls_N[tr], len(names)), z_NF[tr], cls_N[tr])
    rows = []
    for c in kept:
        i = names.index(c)
        y_N = cls_N == i
        clf = LogisticRegression(max_iter=1000, class_weight="balanced").fit(X[tr], y_N[tr].numpy())
        pred_te = torch.from_numpy(clf.decision_function(X[te]) > 0)
        probe_f1 = float(f1_score(y_N[te].numpy(), pred_te.numpy(), zero_division=0.0))
        probes = k_sparse_f1(z_NF[tr], y_N[tr], z_NF[te], y_N[te], ranking_CF[i], max_k)
        main = split_latents(probes, f1_jump)
        tp = te[y_N[te] & pred_te]
        p_D = torch.tensor(clf.coef_[0], dtype=torch.float32)
        cos_F = (W_dec_FD.float() @ p_D) / (W_dec_FD.float().norm(dim=-1) * p_D.norm()).clamp_min(EPS)
        row = {"letter": c, "n_train": counts[c][0], "n_test": counts[c][1], "probe_f1": probe_f1,
               "evaluated": probe_f1 > min_probe_f1, "main_latents": main, "n_split_latents": len(main),
               "split_f1": probes[len(main) - 1][1], "main_cos": float(cos_F[main].max()),
               "n_true_positives": int(len(tp))}
        if len(tp):
            full_N, frac_N, _ = word_absorption(x_ND[tp], z_NF[tp], W_dec_FD, p_D, main, full_min_cos=full_min_cos,
                                                fraction_min_cos=fraction_min_cos, min_share=min_share,
                                                max_absorbers=max_absorbers)
            row.update(main_recall=float((z_NF[tp][:, main].abs() > EPS).any(1).float().mean()),
                       full_absorption_rate=int(full_N.sum()) / len(tp), n_full_absorption=int(full_N.sum()),
                       absorption_fraction=float(frac_N.double().mean()))
        else:
            row.update(main_recall=float("nan"), full_absorption_rate=float("nan"), n_full_absorption=0,
                       absorption_fraction=float("nan"), evaluated=False)
        rows.append(row)
    df = pd.DataFrame(rows).set_index("letter")
    ev = df[df["evaluated"]]
    nan = float("nan")
    df.attrs.update(
        overall=float(ev["full_absorption_rate"].mean()) if len(ev) else nan,
        absorption_fraction=float(ev["absorption_fraction"].mean()) if len(ev) else nan,
        mean_split_latents=float(ev["n_split_latents"].mean()) if len(ev) else nan,
        mean_main_recall=float(ev["main_recall"].mean()) if len(ev) else nan,
        n_letters=int(len(ev)))
    return df


def absorption(model, sae, *, data: SpellingSet | None = None, n_words: int = 3000, n_icl: int = N_ICL,
               min_words: int = 10, test_frac: float = 0.2, seed: int = 0, **thresholds):
    """First-letter absorption of `sae` (module docstring): `first_letter_absorption` on the words of `data`
    (a `spelling_set` at the SAE's hook point; built here from `n_words` vocabulary words with `n_icl` examples
    when None; pass one set to score several SAEs on the same forward pass). `thresholds`: `min_probe_f1`,
    `max_k`, `f1_jump`, `full_min_cos`, `fraction_min_cos`, `min_share`, `max_absorbers` (SAEBench's defaults).

    The DataFrame has one row per letter: probe F1 and whether the letter counts (`evaluated`), the main (split)
    latents and their k-sparse F1, the true positives, main-latent recall, the full absorption rate and the mean
    absorption fraction; `attrs`: 'overall' (mean full absorption rate), 'absorption_fraction',
    'mean_split_latents', 'mean_main_recall', 'n_letters'."""
    hp = hookpoint_of(sae)
    allowed = {"min_probe_f1", "max_k", "f1_jump", "full_min_cos", "fraction_min_cos", "min_share", "max_absorbers"}
    if set(thresholds) - allowed:
        raise EvalError(f"unknown absorption option(s) {sorted(set(thresholds) - allowed)}; choose from {sorted(allowed)}")
    if data is None:
        data = spelling_set(model, hp, n_words=n_words, n_icl=n_icl, test_frac=test_frac, min_words=2 * min_words,
                            seed=seed)
    elif data.hookpoint != hp:
        raise EvalError(f"the spelling set was read at {data.hookpoint!r} but the SAE reads {hp!r}: build it with "
                        f"spelling_set(model, {hp!r})")
    with torch.no_grad():
        x_ND = data.acts_ND
        z_NF = torch.cat([sae.encode(x.to(sae.device, sae.W_dec.dtype)).float().cpu() for x in x_ND.split(1024)])
        W_dec_FD = sae.W_dec.detach().float().cpu()
    if not set(data.letters) <= set(string.ascii_lowercase):
        raise EvalError("the spelling set's labels must be lower-case first letters")
    df = first_letter_absorption(x_ND, z_NF, W_dec_FD, data.letters, data.train, data.test, min_words=min_words,
                                 **thresholds)
    df.attrs["n_icl"] = data.n_icl
    return df
