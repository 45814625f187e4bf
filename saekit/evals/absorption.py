"""Feature absorption (Chanin et al. 2024, as in SAEBench): first-letter identification.

Single-token words of the model's vocabulary (a leading space and 2+ ASCII letters) are read in the
prompt `PROMPT`, at the word's token. A logistic-regression probe per letter learns "starts with L" on
the hook point's activations (training words); the letter's main SAE latents are the ones whose decoder
direction has the largest cosine with the probe. On held-out words that start with L and that the probe
gets right, a word is *absorbed* when no main latent fires but another latent whose decoder is aligned
with the probe (cosine >= `min_cos`) carries at least `min_share` of the word's projection on the probe
direction. The absorption rate is the fraction of those words absorbed, per letter and overall.
"""

from __future__ import annotations

import random
import re
import string
from typing import Sequence

import torch

from ..errors import EvalError
from .activations import id_batch, hookpoint_of

PROMPT = "Word:{word}"
_WORD = re.compile(r"^ [A-Za-z]{2,}$")


def vocab_words(tokenizer, limit: int = 3000, seed: int = 0) -> list[tuple[int, str]]:
    """(token id, word) of single-token words (module docstring), at most `limit`, sampled by `seed`."""
    out = []
    for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        w = t.replace("\u2581", " ").replace("\u0120", " ") if isinstance(t, str) else ""
        if _WORD.match(w):
            out.append((i, w))
    random.Random(seed).shuffle(out)
    return out[:limit]


@torch.no_grad()
def word_activations(model, sae, words: Sequence[tuple[int, str]], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations [N, D], latents [N, F]) at each word's token in `PROMPT`."""
    from ..stream import stream_activations

    hp = hookpoint_of(sae)
    prefix = model.tokenizer(PROMPT.split("{word}")[0], add_special_tokens=False)["input_ids"]
    ids, mask = id_batch(model, [[*prefix, i] for i, _ in words])  # every row has the same length
    acts = []
    for batch in stream_activations(model, (ids, mask), [hp], batch_size=batch_size):
        x_nD = batch.acts[hp]
        acts.append(x_nD.reshape(len(batch.input_ids), -1, x_nD.shape[-1])[:, -1])  # [B, T-1, D] -> last
    x_ND = torch.cat(acts)
    return x_ND, sae.encode(x_ND.to(sae.device)).float().cpu()


def absorption(model, sae, *, n_words: int = 3000, min_words: int = 20, n_main: int = 1, min_cos: float = 0.025,
               min_share: float = 0.4, test_frac: float = 0.3, seed: int = 0):
    """A DataFrame with one row per letter that has at least `min_words` words: probe F1, the main
    latent(s) and their cosine, the main latents' recall (fraction of the letter's held-out words where one
    fires), the absorption rate and the words it counts; `df.attrs['overall']` is the rate over all
    letters' words."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    words = vocab_words(model.tokenizer, n_words, seed)
    if len(words) < 2 * min_words:
        raise EvalError(f"the vocabulary gave {len(words)} single-token words; absorption needs at least "
                        f"{2 * min_words} (a tokenizer with whole-word tokens)")
    x_ND, z_NF = word_activations(model, sae, words)
    first = [w.strip()[0].lower() for _, w in words]
    rng = random.Random(seed)
    idx = list(range(len(words)))
    rng.shuffle(idx)
    n_test = int(test_frac * len(idx))
    test, train = idx[:n_test], idx[n_test:]
    scale = x_ND[train].norm(dim=-1).mean()
    X = (x_ND / scale).numpy()
    W_dec_FD = sae.W_dec.detach().float().cpu()
    W_dec_FD = W_dec_FD / W_dec_FD.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    rows = []
    tot_absorbed = tot_words = 0
    for letter in string.ascii_lowercase:
        y = torch.tensor([c == letter for c in first])
        if int(y[train].sum()) < min_words or int(y[test].sum()) < 3:
            continue
        clf = LogisticRegression(max_iter=1000, class_weight="balanced").fit(X[train], y[train].numpy())
        pred = torch.from_numpy(clf.predict(X[test])).bool()
        p_D = torch.tensor(clf.coef_[0], dtype=torch.float32)
        p_D = p_D / p_D.norm()
        cos_F = W_dec_FD @ p_D
        main = cos_F.topk(n_main).indices
        te = torch.tensor(test)
        pos = te[y[te] & pred]  # held-out words of this letter the probe gets right
        if len(pos) == 0:
            continue
        z = z_NF[pos]  # [P, F]
        main_fires = (z[:, main] > 0).any(1)
        # each latent's contribution to the word's reconstruction along the probe direction
        contrib_PF = z * (sae.W_dec.detach().float().cpu() @ p_D)[None]
        total_P = (x_ND[pos] @ p_D).clamp_min(1e-8)
        aligned = (cos_F >= min_cos)[None] & (z > 0)
        best_P = torch.where(aligned, contrib_PF, torch.zeros_like(contrib_PF)).max(1).values
        absorbed = ~main_fires & (best_P >= min_share * total_P)
        rows.append({"letter": letter, "n_words": int(len(pos)),
                     "probe_f1": float(f1_score(y[test].numpy(), pred.numpy())),
                     "main_latents": main.tolist(), "main_cos": round(float(cos_F[main].max()), 4),
                     "main_recall": float(main_fires.float().mean()),
                     "absorption_rate": float(absorbed.float().mean()), "n_absorbed": int(absorbed.sum())})
        tot_absorbed += int(absorbed.sum())
        tot_words += int(len(pos))
    if not rows:
        raise EvalError(f"no letter has {min_words} training words: lower min_words or raise n_words")
    df = pd.DataFrame(rows).set_index("letter")
    df.attrs["overall"] = tot_absorbed / tot_words
    df.attrs["mean_main_recall"] = float(df["main_recall"].mean())
    return df
