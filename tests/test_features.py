"""Feature statistics, logit effects, search and multilingual features: properties, checked by brute force."""

from __future__ import annotations

import math

import pytest
import torch

import saekit
from saekit.features import (
    FeatureError,
    FeatureStats,
    cooccurrence,
    decoder_neighbours,
    feature_stats,
    features_for_text,
    features_for_tokens,
    logit_effects,
    multilingual_features,
    parallel_articles,
    prompt_activations,
    unembedding,
)
from saekit.tokens import keep_mask
from tiny import tiny_model

HOSTILE = '<script>window.__pwned=1</script> and <img src=x onerror="window.__pwned=1"> stay text'
TEXTS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Paris is the capital of France; Madrid is the capital of Spain.",
    HOSTILE,
    "def add(a, b):\n    return a + b\n",
    "Le chat dort sur le canapé pendant que le chien joue dehors.",
] * 4


def make_tiny(arch: str = "gemma3", n_latents: int = 48, k: int = 4):
    model = tiny_model(arch)
    sae = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=n_latents, k=k, hookpoint="resid_post.1"), seed=1)
    return model, sae


def make_tiny_stats(**kw):
    """(model, sae, contexts, stats) for a tiny model and SAE on TEXTS."""
    model, sae = make_tiny()
    ctx = saekit.contexts(model, TEXTS, context_len=24)
    stats = feature_stats(model, sae, ctx, top_k=4, n_samples=6, window=(6, 2), batch_size=8, progress=False, **kw)
    return model, sae, ctx, stats


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_stats()


def brute_latents(model, sae, ctx):
    """Dense latents [N, T, F] with BOS/pad zeroed, computed in one go."""
    x = model.capture(ctx.input_ids, [sae.cfg.hookpoint], ctx.attention_mask)[sae.cfg.hookpoint]
    with torch.no_grad():
        z = sae.encode(x).float().clone()
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    z[~keep] = 0
    return z, keep


def test_density_mean_max_match_brute_force(tiny):
    """Streaming density, mean and max equal the same numbers computed over all tokens at once."""
    model, sae, ctx, stats = tiny
    z, keep = brute_latents(model, sae, ctx)
    zk = z[keep]
    assert stats.n_tokens == int(keep.sum())
    torch.testing.assert_close(stats.density, (zk > 0).float().mean(0))
    torch.testing.assert_close(stats.max_act, zk.amax(0))
    n = (zk > 0).sum(0)
    torch.testing.assert_close(stats.mean_act, torch.where(n > 0, zk.sum(0) / n.clamp_min(1), 0.0))
    assert int(stats.hist.sum(1).sum()) == int((zk > 0).sum()), "every firing lands in exactly one histogram bin"


def test_top_contexts_are_the_strongest_contexts(tiny):
    """Top contexts are per-context maxima, strongest first, peak activation at the window's peak; the
    strongest context leads, and every stronger context left out is a repeat of a shown window or from a
    document already shown `per_document` times (TEXTS holds every text four times)."""
    model, sae, ctx, stats = tiny
    z, keep = brute_latents(model, sae, ctx)
    per_ctx = z.amax(1)  # [N, F]
    left = stats.meta["window"][0]
    per_doc = stats.meta["per_document"]
    for f in range(sae.n_latents):
        ex = stats.examples(f, "top")
        firing = [c for c in range(len(ctx)) if per_ctx[c, f] > 0]
        if not firing:
            assert ex == []
            continue
        assert ex[0]["max"] == pytest.approx(float(per_ctx[:, f].max()), rel=1e-5)
        assert [e["max"] for e in ex] == sorted((e["max"] for e in ex), reverse=True)
        shown = {e["context"] for e in ex}
        windows = {tuple(stats.top_tokens[f, j].tolist()) for j in range(stats.top_tokens.shape[1]) if stats.top_context[f, j] >= 0}
        assert len(windows) == len(ex), "no window twice"
        docs = [int(ctx.doc_index[c]) for c in shown]
        for e in ex:
            assert e["max"] == pytest.approx(float(per_ctx[e["context"], f]), rel=1e-5)
            assert e["acts"][e["peak"]] == pytest.approx(e["max"], rel=1e-3)
            ids = ctx.input_ids[e["context"]].tolist()
            window = [stats.token_str(i) for i in ids]
            text = "".join(window)
            assert "".join(e["tokens"]) in text, "a window is a contiguous piece of its context"
            assert e["doc"] is not None and e["doc"][0] == "user"
        assert max(docs.count(d) for d in docs) <= per_doc
        weakest = ex[-1]["max"] if len(ex) == stats.top_values.shape[1] else 0.0
        for c in firing:
            if c in shown or per_ctx[c, f] <= weakest:
                continue
            p = int(z[c, :, f].argmax())
            T = keep.shape[1]
            win = tuple(int(ctx.input_ids[c, q]) if 0 <= q < T and keep[c, q] else -1
                        for q in range(p - left, p + stats.meta["window"][1] + 1))
            repeat = win in windows
            capped = docs.count(int(ctx.doc_index[c])) >= per_doc
            assert repeat or capped, f"feature {f}: context {c} ({float(per_ctx[c, f])}) left out for no reason"


def test_samples_and_quantiles(tiny):
    """Reservoir samples are firing contexts; quantile groups go from weak to strong."""
    model, sae, ctx, stats = tiny
    f = int(stats.density.argmax())
    samples = stats.examples(f, "sample")
    assert 0 < len(samples) <= 6
    assert all(0 < s["max"] <= float(stats.max_act[f]) + 1e-5 for s in samples)
    groups = stats.quantile_examples(f, n_groups=3)
    lows = [g["range"][0] for g in groups]
    assert lows == sorted(lows) and all(g["range"][0] <= g["range"][1] for g in groups)
    assert len({s["context"] for s in samples}) == len(samples), "a context is sampled at most once"


def test_dead_feature_has_empty_view():
    """A feature that never fires has density 0, no contexts and an empty histogram."""
    model, sae = make_tiny()
    with torch.no_grad():
        sae.b_enc[0] = -1e4  # never in the top k
    stats = feature_stats(model, sae, TEXTS[:3], context_len=24, top_k=3, n_samples=2, progress=False)
    v = stats.view(0)
    assert v["density"] == 0 and v["top_examples"] == [] and v["histogram"]["counts"] == []


def test_save_load_roundtrip_and_labels(tiny, tmp_path):
    """Everything survives save/load (safetensors + json); labels set later are written at once."""
    *_, stats = tiny
    stats.labels.clear()
    stats.save(tmp_path / "fs")
    assert {p.name for p in (tmp_path / "fs").iterdir()} == {"stats.safetensors", "stats.json", "labels.json"}
    again = FeatureStats.load(tmp_path / "fs")
    assert again.tensors.keys() == stats.tensors.keys()
    assert all(torch.equal(again.tensors[k], stats.tensors[k]) for k in stats.tensors)
    assert again.view(3) == stats.view(3)
    again.set_label(3, "  capital cities ")
    assert FeatureStats.load(tmp_path / "fs").labels == {3: "capital cities"}
    again.set_label(3, "")
    assert FeatureStats.load(tmp_path / "fs").labels == {}
    with pytest.raises(FeatureError, match="FeatureStats.save"):
        FeatureStats.load(tmp_path / "nothing")
    (tmp_path / "fs" / "stats.json").write_text("{not json")
    with pytest.raises(FeatureError, match="stats.json is not readable JSON"):
        FeatureStats.load(tmp_path / "fs")
    stats.save(tmp_path / "fs")
    weights = tmp_path / "fs" / "stats.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FeatureError, match="damaged"):
        FeatureStats.load(tmp_path / "fs")


def test_cache_source_matches_model_source(tiny):
    """Statistics from a harvested ActivationCache equal those from running the model."""
    model, sae, ctx, stats = tiny
    cache = saekit.harvest(model, ctx, hookpoints=[sae.cfg.hookpoint], n_tokens=10**6, progress=False)
    from_cache = feature_stats(None, sae, cache, top_k=4, n_samples=6, window=(6, 2), batch_size=8, progress=False,
                               documents=ctx)
    assert from_cache.n_tokens == stats.n_tokens
    torch.testing.assert_close(from_cache.density, stats.density)
    torch.testing.assert_close(from_cache.max_act, stats.max_act, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_cache.top_values, stats.top_values, rtol=1e-4, atol=1e-4)
    assert torch.equal(from_cache.top_context, stats.top_context)
    assert from_cache.examples(3)[0]["doc"] == stats.examples(3)[0]["doc"]
    assert "logit_top_ids" not in from_cache.tensors, "no model, no logit effects"


def test_logit_effects_use_gemma_final_norm():
    """Gemma's final RMSNorm scales by (1 + weight): logit effects equal W_U @ (d/rms(d) * (1 + w))."""
    model, sae = make_tiny("gemma3")
    norm = model.hf_model.model.norm
    with torch.no_grad():
        norm.weight.normal_()  # make the (1 + w) gain matter
    eff = logit_effects(model, sae, n=5, progress=False)
    W = sae.W_dec.detach()
    rms = W.pow(2).mean(-1, keepdim=True).add(norm.eps).rsqrt()
    logits = (W * rms * (1 + norm.weight)) @ model.hf_model.get_output_embeddings().weight.T
    top = logits.topk(5, dim=1)
    assert torch.equal(eff["logit_top_ids"].long(), top.indices)
    torch.testing.assert_close(eff["logit_top_values"], top.values, rtol=1e-4, atol=1e-5)
    assert (eff["logit_bottom_values"][:, 0] <= eff["logit_top_values"][:, -1]).all()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_final_norm_found_for_other_families(arch):
    """The module feeding the unembedding is found structurally (LayerNorm for GPT-2, RMSNorm for Llama)."""
    model = tiny_model(arch)
    u = unembedding(model)
    assert u.norm is not None and "norm" in type(u.norm).__name__.lower()
    assert u.W_U.shape == (model.hf_model.config.vocab_size, model.d_model)


def test_decoder_neighbours_match_brute_force():
    """Neighbours are the most cosine-similar other decoder rows, most similar first."""
    _, sae = make_tiny(n_latents=40)
    idx, cos = decoder_neighbours(sae, n=5, block=7)
    W = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)
    s = W @ W.T
    s.fill_diagonal_(-2)
    want = s.topk(5, dim=1)
    assert torch.equal(idx, want.indices)
    assert (cos[:, :-1] >= cos[:, 1:]).all() and not (idx == torch.arange(40)[:, None]).any()


def test_cooccurrence_is_jaccard():
    """Co-occurrence scores are the Jaccard similarity of firing sets, computed block by block."""
    g = torch.Generator().manual_seed(0)
    A = torch.rand(50, 12, generator=g) < 0.3  # tokens x features
    rows, feats = A.nonzero(as_tuple=True)
    idx, jac = cooccurrence(rows, feats, 12, 50, n_top=3, block=5)
    Af = A.float()
    inter = Af.T @ Af
    union = Af.sum(0)[:, None] + Af.sum(0)[None, :] - inter
    J = inter / union.clamp_min(1)
    for f in range(12):
        for i, j in zip(idx[f].tolist(), jac[f].tolist()):
            if i >= 0:
                assert i != f and j == pytest.approx(float(J[f, i]))
        others = torch.cat([J[f, :f], J[f, f + 1 :]])
        assert jac[f, 0] == pytest.approx(float(others.max()))


def test_prompt_activations_match_latents():
    """The prompt view lists each token's active features; a column equals the dense latent."""
    model, sae = make_tiny()
    text = "Paris <b>bold</b>"
    pa = prompt_activations(model, sae, text)
    assert "".join(pa.tokens) == text
    ids = torch.tensor([[model.bos_token_id, *pa.token_ids]])
    x = model.capture(ids, [sae.cfg.hookpoint])[sae.cfg.hookpoint]
    with torch.inference_mode():
        z = sae.encode(x)[0, 1:]
    f = pa.features[2][0]
    assert pa.column(f) == pytest.approx(z[:, f].tolist(), rel=1e-3, abs=1e-4)
    assert all(len(fs) <= sae.cfg.k for fs in pa.features)
    assert all(v == sorted(v, reverse=True) for v in pa.values)
    assert list(pa.table().columns) == ["token", "features"]
    with pytest.raises(FeatureError, match="non-empty"):
        prompt_activations(model, sae, "   ")


def test_search_by_text_and_by_token(tiny):
    """Text search ranks by specificity (or, asked, by max on text / corpus max); token search finds features
    peaking on that token."""
    model, sae, ctx, stats = tiny
    df = features_for_text(model, sae, "the capital of France", stats, top=10)
    assert len(df) > 0 and (df["score"].diff().dropna() <= 1e-6).all()
    assert (df["max_on_text"] > 0).all() and (df["score"] == df["specificity"]).all()
    old = features_for_text(model, sae, "the capital of France", stats, top=10, rank="max")
    ratio = old["max_on_text"] / stats.max_act[list(old.index)].numpy()
    assert (old["score"] - ratio).abs().max() < 1e-5
    tok_df = features_for_tokens(stats, ["a"])
    assert len(tok_df) > 0
    left = stats.meta["window"][0]
    f = int(tok_df.index[0])
    peaks = [stats.token_str(int(t)) for t in stats.tensors["top_tokens"][f, :, left]]
    assert "a" in [p.strip().lower() for p in peaks] or tok_df.loc[f, "hits"] > 0
    assert features_for_tokens(stats, ["no-such-token-anywhere"]).empty


def test_parallel_articles_align_languages():
    """Articles are matched by English title; each language's document is that article's lead."""
    arts = parallel_articles()
    assert len(arts) > 1000
    assert all(set(a.docs) == {"wiki_en", "wiki_es", "wiki_fr"} for a in arts)
    assert all(a.docs["wiki_en"].key == a.key for a in arts)
    keys = [a.key for a in arts]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert len(parallel_articles(("wiki_en", "wiki_es"))) > 1300
    with pytest.raises(FeatureError, match="wiki_en"):
        parallel_articles(("wiki_es", "wiki_fr"))


def test_multilingual_table_properties():
    """Correlations are mean cross-language correlations in [-1, 1]; rows are sorted by score (specificity
    by default, correlation when asked) and name real articles."""
    model, sae = make_tiny()
    arts = parallel_articles(limit=6)
    mf = multilingual_features(model, sae, arts, tokens_per_doc=16, progress=False)
    assert mf.max_acts.shape == (3, 6, sae.n_latents)
    for rank in ("specificity", "correlation"):
        df = mf.table(top=5, rank=rank)
        assert ((df["correlation"] >= -1 - 1e-5) & (df["correlation"] <= 1 + 1e-5)).all()
        assert (df["score"] == df[rank]).all() and (df["specificity"] >= 0).all()
        assert (df["score"].diff().dropna() <= 1e-6).all()
        assert all(name.split(", ")[0] in mf.articles for name in df["articles"])
    assert (mf.table(top=5)["correlation"] > 0).all(), "specificity ranks features whose profiles agree"
    assert set(mf.language_table(2)["language"]) == {"wiki_en", "wiki_es", "wiki_fr"}


def test_bad_input_is_named():
    model, sae = make_tiny()
    with pytest.raises(FeatureError, match="window"):
        feature_stats(model, sae, TEXTS, window=(-1, 2), progress=False)
    with pytest.raises(FeatureError, match="pass a model"):
        feature_stats(None, sae, TEXTS, progress=False)
    *_, stats = make_tiny_stats()
    with pytest.raises(FeatureError, match="out of range"):
        stats.view(sae.n_latents)


def test_memory_bounded_for_many_features():
    """Stored examples scale with features x (top_k + samples) x window, not with tokens."""
    model, _ = make_tiny()
    sae = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=16384, k=8, hookpoint="resid_post.1"))
    stats = feature_stats(model, sae, TEXTS[:5], context_len=32, top_k=2, n_samples=2, window=(3, 1),
                          n_logits=0, n_neighbours=0, progress=False)
    nbytes = sum(t.numel() * t.element_size() for t in stats.tensors.values())
    assert stats.n_features == 16384
    assert nbytes < 16384 * 200 * 4, f"{nbytes / 2**20:.1f} MiB for 16k features"


@pytest.mark.real_model
def test_real_model_feature_inspection(real_model, real_cache, real_sae, tmp_path):
    """Gemma 3 270M + a quickly trained SAE: sane statistics, Gemma's norm, multilingual alignment above chance
    (the session's model, 20k-token resid_post.6 harvest and SAE, `conftest.py`)."""
    model, cache, sae = real_model, real_cache, real_sae
    stats = feature_stats(model, sae, cache, n_neighbours=5, progress=False)
    assert stats.n_tokens == cache.n_tokens
    # TopK: each token has at most k active latents, so densities sum to at most k
    assert float(stats.density.sum()) <= 16 + 1e-3
    assert float((stats.density > 0).float().mean()) > 0.5, "most latents of a fresh TopK SAE fire"
    assert type(unembedding(model).norm).__name__ == "Gemma3RMSNorm"
    f = int(torch.argsort(stats.density, descending=True)[10])
    v = stats.view(f)
    assert v["top_examples"] and v["logits_top"] and v["histogram"]["counts"]
    assert all(isinstance(t, str) for t, _ in v["logits_top"])
    stats.save(tmp_path / "stats")
    assert FeatureStats.load(tmp_path / "stats").view(f) == v

    arts = parallel_articles(limit=None)[::40][:24]
    mf = multilingual_features(model, sae, arts, tokens_per_doc=32, batch_size=24, progress=False)
    top = mf.table(top=10, min_articles=2, rank="correlation")
    assert len(mf.table(top=10, min_articles=2)) > 0
    shuffled = type(mf)(mf.articles, mf.languages, mf.max_acts.clone())
    perm = torch.randperm(len(arts), generator=torch.Generator().manual_seed(0))
    shuffled.max_acts[1] = shuffled.max_acts[1][perm]
    shuffled.max_acts[2] = shuffled.max_acts[2][perm.flip(0)]
    base = shuffled.table(top=10, min_articles=2, rank="correlation")
    assert math.isfinite(top["score"].mean())
    assert top["score"].mean() > base["score"].mean(), "aligned articles agree more than shuffled ones"
