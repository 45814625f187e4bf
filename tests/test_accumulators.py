"""feature_stats' accumulators, one statistic each: streamed over random batches, equal to a direct
computation over all the data at once."""

from __future__ import annotations

import pytest
import torch

from saekit.features.accumulators import HIST_EDGES, ActivationHistogram, ContextSample, CooccurrenceSample
from saekit.features.accumulators import FiringStats, LatentBatch, TopContexts, window_hash

F, T, WINDOW = 7, 9, (3, 2)


def random_batches(seed: int, n_batches: int = 5, sizes=(3, 4, 1, 5, 2)) -> list[LatentBatch]:
    """Sparse non-negative latents on [B, T] grids; position 0 and a random tail per context left out."""
    g = torch.Generator().manual_seed(seed)
    out, start = [], 0
    for b in range(n_batches):
        B = sizes[b % len(sizes)]
        keep = torch.ones(B, T, dtype=torch.bool)
        keep[:, 0] = False
        for i in range(B):
            keep[i, T - int(torch.randint(0, 4, (1,), generator=g)) :] = False
        z = torch.rand(B, T, F, generator=g) * 8 * (torch.rand(B, T, F, generator=g) < 0.3)
        z[~keep] = 0
        ids = torch.randint(4, 100, (B, T), generator=g)
        out.append(LatentBatch(z, ids, keep, torch.arange(start, start + B)))
        start += B
    return out


def stream(acc, batches):
    for b in batches:
        acc.update(b)
    return acc.result()


def everything(batches):
    """All batches as one [N, T, F] grid (the direct computation's input)."""
    return (torch.cat([b.z for b in batches]), torch.cat([b.token_ids for b in batches]), torch.cat([b.keep for b in batches]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_firing_stats(seed):
    batches = random_batches(seed)
    acc = FiringStats(F)
    res = stream(acc, batches)
    z, _, keep = everything(batches)
    zk = z[keep]  # [n, F]
    fired = (zk > 0).sum(0)
    assert acc.n_tokens == int(keep.sum())
    torch.testing.assert_close(res["density"], (zk > 0).float().mean(0))
    torch.testing.assert_close(res["mean_act"], torch.where(fired > 0, zk.sum(0) / fired.clamp_min(1), 0.0))
    torch.testing.assert_close(res["max_act"], zk.amax(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_activation_histogram(seed):
    batches = random_batches(seed)
    hist = stream(ActivationHistogram(F), batches)["hist"]
    z, _, keep = everything(batches)
    for f in range(F):
        v = z[keep][:, f]
        v = v[v > 0].clamp(HIST_EDGES[0], HIST_EDGES[-1] * 0.999)  # out-of-range values land in the end bins
        want, _ = torch.histogram(v.double(), bins=HIST_EDGES.double())
        assert torch.equal(hist[f].long(), want.long()), f


def direct_windows(z, ids, keep, c, f):
    """Token ids and activations of feature f in the window around context c's peak."""
    left, right = WINDOW
    p = int(z[c, :, f].argmax())
    toks, acts = [], []
    for q in range(p - left, p + right + 1):
        ok = 0 <= q < T and bool(keep[c, q])
        toks.append(int(ids[c, q]) if ok else -1)
        acts.append(float(z[c, q, f]) if ok else 0.0)
    return toks, acts


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 40])
def test_top_contexts(seed, k):
    """The k contexts with the highest peaks, with their windows; empty slots where fewer contexts fire."""
    batches = random_batches(seed)
    res = stream(TopContexts(F, k, WINDOW), batches)
    z, ids, keep = everything(batches)
    peak = z.amax(1)  # [N, F]
    for f in range(F):
        firing = (peak[:, f] > 0).nonzero().squeeze(-1)
        want = firing[torch.argsort(peak[firing, f], descending=True)][:k]
        got = res["top_context"][f]
        order = torch.argsort(res["top_values"][f], descending=True)
        assert got[order][: len(want)].tolist() == want.tolist()
        assert (got[order][len(want) :] == -1).all() and (res["top_values"][f][order][len(want) :] == 0).all()
        for j in order[: len(want)].tolist():
            c = int(got[j])
            assert float(res["top_values"][f, j]) == pytest.approx(float(peak[c, f]))
            toks, acts = direct_windows(z, ids, keep, c, f)
            assert res["top_tokens"][f, j].tolist() == toks
            assert res["top_acts"][f, j].tolist() == pytest.approx(acts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_context_sample(seed):
    """A seeded sample of distinct firing contexts (all of them when they fit), with their windows."""
    batches = random_batches(seed)
    z, ids, keep = everything(batches)
    peak = z.amax(1)
    k = 4
    res = stream(ContextSample(F, k, WINDOW, seed=seed), batches)
    again = stream(ContextSample(F, k, WINDOW, seed=seed), random_batches(seed))
    assert all(torch.equal(res[n], again[n]) for n in res), "the same seed samples the same contexts"
    for f in range(F):
        firing = set((peak[:, f] > 0).nonzero().squeeze(-1).tolist())
        got = [c for c in res["sample_context"][f].tolist() if c >= 0]
        assert len(got) == len(set(got)) == min(k, len(firing)) and set(got) <= firing
        for j, c in enumerate(res["sample_context"][f].tolist()):
            if c < 0:
                continue
            assert float(res["sample_values"][f, j]) == pytest.approx(float(peak[c, f]))
            toks, acts = direct_windows(z, ids, keep, c, f)
            assert res["sample_tokens"][f, j].tolist() == toks and res["sample_acts"][f, j].tolist() == pytest.approx(acts)
    big = stream(ContextSample(F, 100, WINDOW, seed=seed), batches)
    for f in range(F):
        assert set(big["sample_context"][f][big["sample_context"][f] >= 0].tolist()) == set((peak[:, f] > 0).nonzero().squeeze(-1).tolist())


def test_context_sample_is_roughly_uniform():
    """Over many seeds every firing context is picked about equally often (k of n each time)."""
    batches = random_batches(0)
    z, _, _ = everything(batches)
    fires = z.amax(1)[:, 0] > 0
    n, k, runs = int(fires.sum()), 3, 300
    counts = torch.zeros(len(fires))
    for seed in range(runs):
        ctx = stream(ContextSample(F, k, WINDOW, seed=seed), batches)["sample_context"][0]
        counts[ctx[ctx >= 0]] += 1
    expected = runs * k / n
    assert (counts[~fires] == 0).all()
    assert ((counts[fires] - expected).abs() < 0.5 * expected).all(), (counts[fires], expected)


@pytest.mark.parametrize("max_tokens", [10, 37, 10_000])
def test_cooccurrence_sample(max_tokens):
    """Jaccard similarity of firing sets over the first `max_tokens` kept tokens."""
    batches = random_batches(3)
    res = stream(CooccurrenceSample(F, max_tokens, n_top=3), batches)
    z, _, keep = everything(batches)
    A = (z[keep][:max_tokens] > 0).float()  # [n, F]
    inter = A.T @ A
    J = inter / (A.sum(0)[:, None] + A.sum(0)[None, :] - inter).clamp_min(1)
    J.fill_diagonal_(-1)
    for f in range(F):
        for i, j in zip(res["cooc_index"][f].tolist(), res["cooc_jaccard"][f].tolist()):
            if i >= 0:
                assert i != f and j == pytest.approx(float(J[f, i]))
        if J[f].max() > 0:
            assert float(res["cooc_jaccard"][f, 0]) == pytest.approx(float(J[f].max()))
    assert stream(CooccurrenceSample(F, 0, n_top=3), batches) == {}


def with_copies(batches: list[LatentBatch], copies: dict[int, int]) -> list[LatentBatch]:
    """The batches with contexts made exact copies (tokens and latents) of earlier ones: {copy: original}."""
    z, ids, keep = (t.clone() for t in everything(batches))
    for c, o in copies.items():
        z[c], ids[c], keep[c] = z[o], ids[o], keep[o]
    out, start = [], 0
    for b in batches:
        n = b.z.shape[0]
        out.append(LatentBatch(z[start : start + n], ids[start : start + n], keep[start : start + n], b.context))
        start += n
    return out


def brute_top(z, ids, keep, k, docs=None, per_document=None):
    """Per feature, the contexts of the top list by brute force: strongest first, a window that repeats a
    stronger one left out, then at most `per_document` per document."""
    peak = z.amax(1)
    out = []
    for f in range(F):
        cands = sorted((c for c in range(len(z)) if peak[c, f] > 0), key=lambda c: (-float(peak[c, f]), c))
        seen, per, kept = set(), {}, []
        for c in cands:
            win = tuple(direct_windows(z, ids, keep, c, f)[0])
            if win in seen:
                continue
            seen.add(win)
            d = docs[c] if docs is not None else c
            if per_document is not None and per.get(d, 0) >= per_document:
                continue
            per[d] = per.get(d, 0) + 1
            kept.append(c)
        out.append(kept[:k])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_contexts_drop_repeated_windows(seed):
    """A context that repeats another's window (a document twice in the corpus) is kept once, and the
    list fills up with the next distinct windows, exactly as a brute-force top-k over distinct windows."""
    copies = {5: 0, 6: 0, 9: 2, 12: 9, 14: 3}
    batches = with_copies(random_batches(seed), copies)
    z, ids, keep = everything(batches)
    for k in (1, 3, 6):
        res = stream(TopContexts(F, k, WINDOW), batches)
        want = brute_top(z, ids, keep, k)
        for f in range(F):
            order = torch.argsort(res["top_values"][f], descending=True)
            got = [int(c) for c in res["top_context"][f][order] if c >= 0]
            assert got == want[f], (f, got, want[f])
            windows = [tuple(res["top_tokens"][f, j].tolist()) for j in range(k) if res["top_context"][f, j] >= 0]
            assert len(windows) == len(set(windows))
    # the old behaviour (no de-duplication) would have kept copies: the test data does hold them
    peak = z.amax(1)
    assert any(peak[c, f] > 0 and peak[c, f] == peak[o, f] for c, o in copies.items() for f in range(F))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_document", [1, 2])
def test_top_contexts_cap_contexts_per_document(seed, per_document):
    """With documents known, at most `per_document` contexts of one document: a brute-force top-k under
    the same cap; ContextSample keeps the cap too."""
    batches = random_batches(seed)
    z, ids, keep = everything(batches)
    docs = torch.arange(len(z)) // 3  # three contexts per document
    res = stream(TopContexts(F, 4, WINDOW, context_doc=docs, per_document=per_document), batches)
    want = brute_top(z, ids, keep, 4, docs.tolist(), per_document)
    sample = stream(ContextSample(F, 4, WINDOW, seed=seed, context_doc=docs, per_document=per_document), batches)
    for f in range(F):
        order = torch.argsort(res["top_values"][f], descending=True)
        got = [int(c) for c in res["top_context"][f][order] if c >= 0]
        assert got == want[f]
        for kept in (got, [int(c) for c in sample["sample_context"][f] if c >= 0]):
            d = docs[kept].tolist()
            assert all(d.count(x) <= per_document for x in d)
    if per_document == 1:  # the data do put several strong contexts in one document
        uncapped = stream(TopContexts(F, 4, WINDOW, context_doc=docs, per_document=None), batches)
        assert not torch.equal(uncapped["top_context"], res["top_context"]), "the cap changed some list"


def test_window_hash_matches_equality():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-1, 300_000, (200, 7), generator=g, dtype=torch.int32)
    w[50] = w[10]
    h = window_hash(w)
    assert h[50] == h[10] and len(torch.unique(h)) == 199
