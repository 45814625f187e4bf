"""Features a reader can trust: dense latents flagged and sorted last, an interpretability score as the
default order, de-duplicated top contexts with their documents, quantile samples that never repeat the
top list, specificity-ranked search, compact saved statistics that still read old folders.

Properties, checked on a hand-made SAE whose latents we know: one fires on every token (dense), one
only on the letter "z", one on a few rare letters; the rest never fire.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import saekit
from saekit.data import Document
from saekit.features import (
    DENSE_DENSITY,
    FeatureError,
    FeatureStats,
    MultilingualFeatures,
    ParallelArticle,
    feature_stats,
    features_for_text,
    multilingual_features,
    specificity,
)
from tiny import tiny_model

Z_TEXTS = [
    "The zoo opens at nine and closes at five.",
    "A zero is a number that means nothing at all.",
    "She ordered a pizza with extra cheese tonight.",
    "What size are the shoes you want to buy?",
    "A lazy afternoon by the river is fine.",
    "The jazz band played until midnight.",
    "He won a prize for the best garden.",
    "Frozen lakes crack loudly in the spring.",
]
OTHER = [
    "Paris is the capital of France.",
    "def add(a, b):\n    return a + b\n",
    "Le chat dort sur le canapé.",
    "Rain fell on the hills all morning long.",
    "Madrid is the capital of Spain.",
    "The cat sleeps while the dog plays.",
]
DENSE, ZED, RARE = 0, 1, 2
DEAD = (3, 4, 5)


def known_sae(model):
    """A ReLU SAE on the token embeddings (`embed`): latent 0 is 3.0 on every token, latent 1 is 1.0 on
    'z' only, latent 2 fires on 'k', 'w', 'v', 'y', 'b'; latents 3-5 never fire."""
    sae = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=6, k=2, architecture="relu", hookpoint="embed"), seed=0)
    E = model.hf_model.get_input_embeddings().weight.detach()
    tid = lambda c: model.tokenizer(c, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
        sae.b_dec.zero_()
        sae.b_enc[DENSE] = 3.0
        ez = E[tid("z")]
        sae.W_enc[ZED] = 5 * ez / ez.pow(2).sum()
        sae.b_enc[ZED] = -4.0
        for c in "kwvyb":
            e = E[tid(c)]
            sae.W_enc[RARE] += 5 * e / e.pow(2).sum()
        sae.b_enc[RARE] = -4.0
    return sae


@pytest.fixture(scope="module")
def known():
    model = tiny_model("llama")
    sae = known_sae(model)
    ctx = saekit.contexts(model, (Z_TEXTS + OTHER) * 2, context_len=24)  # every text twice: duplicate windows
    stats = feature_stats(model, sae, ctx, top_k=4, n_samples=6, window=(4, 2), progress=False)
    return model, sae, ctx, stats


# -- dense flag and the default order -------------------------------------------------------------


def test_dense_latent_is_flagged_and_sorted_after_sparse_ones(known):
    *_, stats = known
    assert float(stats.density[DENSE]) == 1.0 and float(stats.density[ZED]) < DENSE_DENSITY
    dense = stats.is_dense()
    assert dense[DENSE] and not dense[ZED] and not dense[RARE]
    order = stats.order()
    assert stats.score()[ZED] == pytest.approx(1.0), "four contexts, one peak token, four documents"
    assert set(order[:2]) == {ZED, RARE}, "the two sparse features come first"
    assert order.index(DENSE) > max(order.index(ZED), order.index(RARE)), "dense after every sparse feature"
    assert set(order[-len(DEAD):]) == set(DEAD), "features that never fired come last"
    # by raw max activation the dense latent would lead: that is what the old default sort showed
    assert stats.order("max_act")[0] == DENSE
    table = stats.table()
    assert list(table.index) == order and bool(table.loc[DENSE, "dense"]) and not table.loc[ZED, "dense"]
    assert list(stats.table("feature").index) == list(range(stats.n_features))
    assert stats.order(descending=False) == order[::-1]
    view = stats.view(DENSE)
    assert view["dense"] is True and stats.view(ZED)["dense"] is False
    # the flag follows the threshold
    assert not stats.is_dense(1.0)[DENSE] and stats.is_dense(0.0)[ZED]


def test_bad_thresholds_and_sort_keys_are_named(known):
    *_, stats = known
    with pytest.raises(FeatureError, match=r"threshold.*\[0, 1\]"):
        stats.is_dense(-0.1)
    with pytest.raises(FeatureError, match=r"threshold"):
        stats.order(threshold=2)
    with pytest.raises(FeatureError, match=r"unknown sort key 'bogus'.*'score'"):
        stats.order("bogus")
    with pytest.raises(FeatureError, match=r"unknown sort key"):
        stats.table(sort_by="bogus")
    with pytest.raises(FeatureError, match="per_document"):
        feature_stats(known[0], known[1], Z_TEXTS, per_document=0, progress=False)
    with pytest.raises(FeatureError, match="n_groups"):
        stats.quantile_examples(ZED, n_groups=0)


def hand_stats(peaks: list[list[int]], docs: list[list[int]] | None = None, K: int = 4) -> FeatureStats:
    """FeatureStats with one feature per row of `peaks` (its top contexts' peak token ids; -1 pads),
    windows of 3 tokens [peak - 1, peak, peak + 1], contexts numbered per feature; `docs` gives each
    context's document."""
    F = len(peaks)
    tokens = torch.full((F, K, 3), -1, dtype=torch.int32)
    values = torch.zeros(F, K)
    context = torch.full((F, K), -1, dtype=torch.long)
    context_doc: list[int] = []
    for f, row in enumerate(peaks):
        for j, t in enumerate(row):
            if t < 0:
                continue
            c = len(context_doc)
            context_doc.append(docs[f][j] if docs else c)
            tokens[f, j] = torch.tensor([100 + c, t, 200 + c], dtype=torch.int32)  # unique surroundings
            values[f, j] = 4.0 - j
            context[f, j] = c
    n_docs = max(context_doc) + 1 if context_doc else 0
    ids = sorted(set(tokens.reshape(-1).tolist()) - {-1})
    return FeatureStats(
        n_tokens=1000,
        tensors={
            "density": torch.full((F,), 0.01), "mean_act": torch.ones(F), "max_act": values.amax(1),
            "hist": torch.zeros(F, 4, dtype=torch.int32),
            "top_values": values, "top_context": context, "top_tokens": tokens, "top_acts": torch.zeros(F, K, 3),
        },
        token_strings={i: f"t{i}" for i in ids} | {7: " Sea", 8: "sea", 9: "SEA "},
        meta={"window": [1, 1], "documents": [["user", str(d)] for d in range(n_docs)], "context_doc": context_doc},
    )


def test_score_prefers_one_peak_token_over_random_peaks():
    """Same number of contexts, same documents: the feature whose top contexts share a peak token scores
    higher than one whose peaks are all different; case and spaces do not split a token."""
    stats = hand_stats([[7, 8, 9, 7], [11, 12, 13, 14], [7, 7, 12, 13]])
    s = stats.score()
    assert s[0] == pytest.approx(1.0), "' Sea', 'sea', 'SEA ' are one token for the score"
    assert s[0] > s[2] > s[1]
    assert stats.score_terms()["peak_share"][1] == pytest.approx(0.25)
    assert stats.order()[0] == 0


def test_score_prefers_many_documents_and_full_lists():
    """One peak token throughout, but drawn from one document, or filling only one of four slots: lower."""
    stats = hand_stats([[7, 7, 7, 7], [7, 7, 7, 7], [7, -1, -1, -1]], docs=[[0, 1, 2, 3], [4, 4, 4, 4], [5]])
    s = stats.score()
    assert s[0] > s[1] and s[0] > s[2]
    t = stats.score_terms()
    assert int(t["n_documents"][1]) == 1 and t["doc_share"][1] == pytest.approx(0.25)
    assert t["fill"][2] == pytest.approx(0.25)


# -- de-duplicated contexts with their documents ----------------------------------------------------


def test_top_contexts_are_distinct_windows_from_many_documents(known):
    """Every text appears twice in the corpus, so every window has a twin: the top list shows each window
    once, at most `per_document` contexts per document, and names each one's document. (This SAE's
    activations tie, so twins may lose by chance here; the random model in test_features and the
    accumulator tests are the ones that fail without de-duplication.)"""
    model, sae, ctx, stats = known
    per_doc = stats.meta["per_document"]
    for f in range(stats.n_features):
        ex = stats.examples(f)
        windows = [tuple(stats.tensors["top_tokens"][f, j].tolist()) for j in range(4) if stats.top_context[f, j] >= 0]
        assert len(windows) == len(set(windows)), f"feature {f} repeats a window"
        docs = [ctx.doc_index[e["context"]].item() for e in ex]
        assert max((docs.count(d) for d in docs), default=0) <= per_doc
        for e in ex:
            d = ctx.documents[ctx.doc_index[e["context"]]]
            assert e["doc"] == [d.source, d.key]
    z_docs = {tuple(e["doc"]) for e in stats.examples(ZED)}
    assert len(z_docs) == 4, "the 'z' feature's four contexts come from four documents"


def test_quantile_examples_never_repeat_the_top_list(known):
    """Quantile samples leave out the top examples (same context or same window)."""
    *_, stats = known
    for f in range(stats.n_features):
        top = stats.examples(f)
        shown = [e for g in stats.quantile_examples(f) for e in g["examples"]]
        assert not {e["context"] for e in shown} & {e["context"] for e in top}
        assert not {tuple(e["tokens"]) for e in shown} & {tuple(e["tokens"]) for e in top}


def test_cached_activations_take_their_documents(known):
    """From an ActivationCache: documents= names the examples' sources; without it they have none."""
    model, sae, ctx, stats = known
    cache = saekit.harvest(model, ctx, hookpoints=["embed"], n_tokens=10**6, progress=False)
    kw = dict(top_k=4, n_samples=6, window=(4, 2), progress=False)
    where = lambda st, f: [(e["context"], e["doc"], e["peak"]) for e in st.examples(f)]  # noqa: E731
    named = feature_stats(None, sae, cache, documents=ctx, **kw)
    assert where(named, ZED) == where(stats, ZED) and where(named, RARE) == where(stats, RARE)
    pair = feature_stats(None, sae, cache, documents=(ctx.documents, ctx.doc_index), **kw)
    assert where(pair, RARE) == where(named, RARE)
    bare = feature_stats(None, sae, cache, **kw)
    assert bare.meta["documents"] == [] and all(e["doc"] is None for e in bare.examples(ZED))
    assert bare.view(ZED)["top_examples"], "no documents, still a view"
    with pytest.raises(FeatureError, match="documents= names the documents of an ActivationCache"):
        feature_stats(model, sae, ctx, documents=ctx, **kw)
    with pytest.raises(FeatureError, match="context_doc holds"):
        feature_stats(None, sae, cache, documents=(ctx.documents, [len(ctx.documents)] * len(ctx)), **kw)


# -- specificity ------------------------------------------------------------------------------------


def test_text_search_ranks_the_specific_feature_first(known):
    """'a lazy zebra': the always-on latent fires strongest, the 'z' latent is the specific one."""
    model, sae, _, stats = known
    old = features_for_text(model, sae, "a lazy zebra", rank="max")
    assert old.index[0] == DENSE, "the old ranking (raw max) puts the dense latent first"
    for df in (features_for_text(model, sae, "a lazy zebra", stats),
               features_for_text(model, sae, "a lazy zebra", baseline_tokens=2048)):
        assert df.index[0] == ZED
        assert df.loc[DENSE, "specificity"] == pytest.approx(1.0, rel=0.05), "as active as anywhere"
        assert (df["score"].diff().dropna() <= 1e-6).all()
    no_z = features_for_text(model, sae, "the cat sleeps", stats)
    assert ZED not in no_z.index
    with pytest.raises(FeatureError, match="unknown rank 'best'"):
        features_for_text(model, sae, "zoo", stats, rank="best")


def test_coverage_rank_prefers_the_feature_that_fires_across_the_text(known):
    """Coverage = share of the text's tokens where a feature fires - its corpus density; dense latents out."""
    model, sae, _, stats = known
    text = "bob knew a wavy yak by a bay with a kiwi, and a zoo"
    for df in (features_for_text(model, sae, text, stats, rank="coverage"),
               features_for_text(model, sae, text, rank="coverage", baseline_tokens=2048)):
        assert DENSE not in df.index, "a dense latent fires everywhere: not a concept"
        assert df.index[0] == RARE and ZED in df.index
        assert df.loc[RARE, "coverage"] > df.loc[ZED, "coverage"] > 0
        assert (df["score"] <= df["coverage"] + 1e-6).all() and (df["score"].diff().dropna() <= 1e-6).all()
    lat = features_for_text(model, sae, text, stats, rank="coverage")
    assert lat.loc[RARE, "score"] == pytest.approx(lat.loc[RARE, "coverage"] - float(stats.density[RARE]), abs=1e-6)


def test_specificity_formula_bounds():
    """About 1 for a feature as active as anywhere, at most (N + n) / n, 0 when silent."""
    mean = torch.tensor([0.5, 0.0, 0.2])
    q_sum = torch.tensor([5.0, 3.0, 0.0])  # over n = 10 query tokens
    s = specificity(q_sum, 10, mean, 1000)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(1010 / 10)
    assert s[2] == 0


def test_multilingual_table_ranks_specific_features_above_everywhere_ones():
    """Feature 0 fires on every lead with the same profile in each language (a '(' feature), feature 1
    on two articles in every language (a 'sea' feature): correlation put 0 first, specificity puts 1 first."""
    L, A = 3, 6
    profile = torch.tensor([1.0, 2.0, 3.0, 1.5, 2.5, 1.2])
    max_acts = torch.zeros(L, A, 2)
    max_acts[:, :, 0] = profile  # identical across languages: correlation 1
    max_acts[:, :2, 1] = torch.tensor([[3.0, 2.0], [3.0, 2.2], [2.8, 2.0]])
    max_acts[:, 2:, 1] = torch.tensor([0.1, 0.0, 0.0, 0.05])  # a little noise elsewhere
    n_tok = torch.full((L, A), 40.0)
    sums = max_acts * torch.tensor([20.0, 1.0])  # feature 0 fires on half the tokens, feature 1 on one
    mf = MultilingualFeatures([f"a{i}" for i in range(A)], ["wiki_en", "wiki_es", "wiki_fr"], max_acts, sums, n_tok)
    old = mf.table(rank="correlation")
    assert old.index[0] == 0
    new = mf.table()
    assert new.index[0] == 1 and new.loc[1, "specificity"] > new.loc[0, "specificity"]
    assert new["articles"].iloc[0].split(", ")[0] in {"a0", "a1"}
    with pytest.raises(FeatureError, match="unknown rank"):
        mf.table(rank="loudest")
    bare = MultilingualFeatures(mf.articles, mf.languages, max_acts)
    assert bare.table(rank="correlation").index[0] == 0
    with pytest.raises(FeatureError, match="rank by 'correlation'"):
        bare.table()


def test_multilingual_features_record_lead_sums(known):
    model, sae, _, stats = known
    arts = [ParallelArticle(t[:8], {lang: Document(t, lang, t[:8]) for lang in ("wiki_en", "wiki_es", "wiki_fr")})
            for t in Z_TEXTS[:3] + OTHER[:3]]
    mf = multilingual_features(model, sae, arts, tokens_per_doc=16, progress=False)
    assert mf.sum_acts.shape == mf.max_acts.shape and (mf.n_tokens <= 15).all()
    assert (mf.sum_acts >= mf.max_acts - 1e-5).all()
    for table in (mf.table(top=3, min_articles=1),
                  multilingual_features(model, sae, arts, stats=stats, tokens_per_doc=16, progress=False).table(top=3, min_articles=1)):
        assert ZED in table.index[:2], table
        assert DENSE not in table.index[:2], "the latent that is on everywhere is not specific to any article"


# -- saved statistics: compact, and old folders still load ------------------------------------------


def test_saved_statistics_are_compact_and_exact(known, tmp_path):
    *_, stats = known
    big = feature_stats(known[0], saekit.Sae(saekit.SaeConfig(d_in=known[0].d_model, n_latents=512, k=8,
                                                                hookpoint="resid_post.1")),
                        Z_TEXTS + OTHER, context_len=24, progress=False)
    big.save(tmp_path / "new")
    new_size = (tmp_path / "new" / "stats.safetensors").stat().st_size
    old_size = write_format1(big, tmp_path / "old")
    assert new_size < 0.6 * old_size, (new_size, old_size)
    again = FeatureStats.load(tmp_path / "new")
    assert again.tensors.keys() == big.tensors.keys()
    for k, t in big.tensors.items():
        assert again.tensors[k].dtype == t.dtype and torch.equal(again.tensors[k], t), k
    f = big.order()[0]
    assert again.view(f) == big.view(f)
    assert json.loads((tmp_path / "new" / "stats.json").read_text())["format"] == 2


def write_format1(stats: FeatureStats, path) -> int:
    """A folder as saekit wrote it before format 2: float32 windows, int64 indices, int32 token ids, no
    per_document in the meta."""
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in stats.tensors.items()}, str(path / "stats.safetensors"))
    meta = {k: v for k, v in stats.meta.items() if k != "per_document"}
    (path / "stats.json").write_text(json.dumps({
        "format": 1, "n_tokens": stats.n_tokens, "meta": meta,
        "token_strings": {str(k): v for k, v in stats.token_strings.items()},
    }))
    return (path / "stats.safetensors").stat().st_size


def test_old_folders_still_load(known, tmp_path):
    """A format-1 folder (no labels.json either) loads; score, order and views work on it."""
    *_, stats = known
    write_format1(stats, tmp_path / "v1")
    old = FeatureStats.load(tmp_path / "v1")
    assert old.labels == {}
    assert all(torch.equal(old.tensors[k], stats.tensors[k]) for k in stats.tensors)
    assert old.order() == stats.order() and torch.equal(old.score(), stats.score())
    assert old.view(ZED) == stats.view(ZED)
