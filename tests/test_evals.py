"""saekit.evals: scoring math on synthetic features with known patterns, the pipeline end to end on a tiny
model (offline baseline and an LLM backend on a loopback server), sparse probing, absorption, bad input."""

from __future__ import annotations

import json
import random
import statistics

import pytest
import torch

import saekit
from saekit.errors import EvalError, FeatureError
from saekit.evals import LocalBackend, OpenAIBackend, autointerp, baseline_explanation, run, score_baseline, sparse_probing
from saekit.evals.absorption import absorption, first_letter_absorption, word_absorption
from saekit.evals.kprobe import k_sparse_f1, l1_latent_weights, ranking_keys, split_latents
from saekit.evals.spelling import icl_rows
from saekit.evals.autointerp import choose_features
from saekit.features import feature_stats
from saekit.evals.scoring import ScoringSet, balanced_accuracy, fuzzing_items
from tiny import tiny_model
from llm_loopback import Loopback

WORDS = [" the", " cat", " dog", " sat", " on", " a", " mat", " and", " ran", " far", " big", " red"]


def synthetic_contexts(rule, n: int, seed: int, length: int = 12):
    """Random token windows with the feature's activation from `rule(tokens, j, rng)`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        toks = [rng.choice(WORDS) for _ in range(length)]
        out.append({"tokens": toks, "acts": [rule(toks, j, rng) for j in range(length)]})
    return out


def split(ctxs):
    act = [c for c in ctxs if any(a > 0 for a in c["acts"])]
    non = [c for c in ctxs if not any(a > 0 for a in c["acts"])]
    return act, non


def test_token_feature_scores_near_one():
    rule = lambda toks, j, rng: 3.0 if toks[j] == " cat" else 0.0  # noqa: E731
    act, non = split(synthetic_contexts(rule, 400, 0))
    e = baseline_explanation(act[:20])
    assert e.patterns == (("cat",),)
    ss = ScoringSet(act[20:60], {"random": non[:40], "near_miss": non[40:80]})
    s = score_baseline(e, ss)
    assert s["detection_random"] == 1.0 and s["detection_near_miss"] == 1.0
    assert s["fuzzing"] == 1.0 and s["detection_f1"] == 1.0


def test_random_feature_scores_near_chance():
    rule = lambda toks, j, rng: 1.0 if rng.random() < 0.05 else 0.0  # noqa: E731
    scores = []
    for seed in range(20):
        act, non = split(synthetic_contexts(rule, 200, seed))
        e = baseline_explanation(act[:10])
        scores.append(score_baseline(e, ScoringSet(act[10:50], {"random": non[:40]}))["detection_random"])
    assert abs(statistics.mean(scores) - 0.5) < 0.1


def test_bigram_feature_is_explained_by_its_bigram():
    rule = lambda toks, j, rng: 2.0 if j and toks[j - 1] == " big" and toks[j] == " dog" else 0.0  # noqa: E731
    act, non = split(synthetic_contexts(rule, 1500, 1))
    e = baseline_explanation(act[:20])
    assert e.patterns[0] == ("big", "dog")
    s = score_baseline(e, ScoringSet(act[20:60], {"random": non[:40]}))
    assert s["detection_random"] == 1.0


def test_balanced_accuracy_and_fuzzing_items():
    assert balanced_accuracy([1, 1, 1, 1], [1, 0, 0, 0]) == 0.5  # all-yes is chance whatever the balance
    assert balanced_accuracy([1, 0, 0, 0], [1, 0, 0, 0]) == 1.0
    with pytest.raises(FeatureError, match="both positive and negative"):
        balanced_accuracy([1, 1], [1, 1])
    c = {"tokens": ["a", "b", "c", "d"], "acts": [0, 2.0, 0, 0]}
    items = fuzzing_items(ScoringSet([c]))
    assert [(h, t) for _, h, t in items][0] == ([1], True)
    assert items[1][2] is False and 1 not in items[1][1] and len(items[1][1]) == 1


# -- the pipeline on a tiny model ------------------------------------------------------------------

TEXTS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Paris is the capital of France; Madrid is the capital of Spain.",
    "def add(a, b):\n    return a + b\n",
    "Le chat dort sur le canapé pendant que le chien joue dehors.",
    "El gato duerme en el sofá mientras el perro juega afuera.",
] * 6


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model("gemma3")
    sae = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=32, k=4, hookpoint="resid_post.1"), seed=1)
    ctx = saekit.contexts(model, TEXTS, context_len=24)
    stats = feature_stats(model, sae, ctx, top_k=6, n_samples=8, window=(6, 2), batch_size=8, progress=False)
    return model, sae, stats


def test_autointerp_baseline_end_to_end(tiny):
    model, sae, stats = tiny
    res = autointerp(stats, model=model, sae=sae, n_features=32, n_non=4, progress=False)
    df = res.table()
    assert len(df) + res.skipped["too_few_contexts"] == len(choose_features(stats, 32))
    assert len(df) > 0 and df["verified"].all()
    assert ((df["detection_random"] >= 0) & (df["detection_random"] <= 1)).all()
    f = int(df.index[0])
    assert stats.labels[f] == df.loc[f, "explanation"]  # explanations become labels


def test_labels_never_rewrite_the_stats_folder(tiny, tmp_path):
    model, sae, stats = tiny
    stats.path = tmp_path  # as if loaded from (shipped) files
    try:
        autointerp(stats, n_features=8, progress=False)
    finally:
        stats.path = None
    assert list(tmp_path.iterdir()) == []


def test_too_few_contexts_are_skipped_and_counted(tiny):
    model, sae, stats = tiny
    dead = [f for f in range(stats.n_features) if float(stats.density[f]) == 0]
    live = [f for f in range(stats.n_features) if float(stats.density[f]) > 0][:2]
    res = autointerp(stats, dead + live, model=model, sae=sae, set_labels=False, progress=False)
    assert res.skipped["too_few_contexts"] >= len(dead)
    assert set(res.table().index) <= set(live)


def test_autointerp_with_llm_backend_on_loopback(tiny, tmp_path):
    model, sae, stats = tiny
    feats = list(autointerp(stats, n_features=32, set_labels=False, progress=False).table().index[:3])
    with Loopback(lambda req: (200, {"choices": [{"message": {"role": "assistant", "content":
                  "1" if "Answer" in req["messages"][-1]["content"] else "Explanation: letters"}}]})) as srv:
        llm = OpenAIBackend("tiny-llm", srv.url, api_key="sk-SECRET-123", cache_dir=tmp_path / "cache", backoff=0)
        res = autointerp(stats, feats, model=model, sae=sae, explainer=llm, set_labels=False, progress=False)
        df = res.table()
        assert len(df) > 0, res.skipped
        assert (df["explanation"] == "letters").all()
        # a scorer that always says 1 is at chance on detection (balanced accuracy)
        assert (df["detection_random"] == 0.5).all()
        n = srv.count
        autointerp(stats, feats, model=model, sae=sae, explainer=llm, set_labels=False, progress=False)
        assert srv.count == n  # the rerun is served from the disk cache
    blob = "".join(p.read_text() for p in (tmp_path / "cache").iterdir())
    assert "SECRET" not in blob and "SECRET" not in repr(llm) and "SECRET" not in df.to_string()


def test_sparse_probing_user_labels(tiny):
    model, sae, _ = tiny
    texts = [f"the cat number {i} sat" for i in range(8)] + [f"def f{i}(x): return x" for i in range(8)]
    labels = ["prose"] * 8 + ["code"] * 8
    df = sparse_probing(model, sae, texts=texts, labels=labels, ks=(1, 2))
    assert list(df.columns[:4]) == ["task", "class", "n_train", "n_test"]
    assert 0 <= df.loc[0, "k=1"] <= 1 and df.loc[0, "full"] == 1.0  # separable: byte patterns differ
    with pytest.raises(EvalError, match="one class"):
        sparse_probing(model, sae, texts=texts, labels=["prose"] * 16)
    with pytest.raises(EvalError, match="one label per text"):
        sparse_probing(model, sae, texts=texts, labels=labels[:3])


def test_run_saves_report_and_rejects_unknown(tiny, tmp_path):
    model, sae, stats = tiny
    with pytest.raises(EvalError, match="unknown evaluation"):
        run(model, sae, stats, evals=["nope"])
    with pytest.raises(EvalError, match="pass stats="):
        run(model, sae, None, evals=["autointerp"])
    rep = run(model, sae, stats, evals=["autointerp"], out=tmp_path, progress=False,
              options={"autointerp": {"n_features": 8, "set_labels": False}})
    assert set(rep.table["eval"]) == {"autointerp"}
    saved = json.loads((tmp_path / "evals.json").read_text())
    assert saved["summary"] and "autointerp" in saved["details"]
    assert stats.meta["evals"]["autointerp"]
    rep.plot("autointerp")


def test_absorption_needs_words(tiny):
    model, sae, _ = tiny
    with pytest.raises(EvalError, match="single-token words"):
        absorption(model, sae)  # the byte tokenizer has no whole-word tokens
    with pytest.raises(EvalError, match="unknown absorption option"):
        absorption(model, sae, min_shares=0.3)  # refused before any forward pass


def letter_world(n_per_letter: int = 60, absorbed: int = 0, split_b: bool = False, seed: int = 0):
    """Synthetic first-letter data with known absorption: letters a-e, latent i (decoder e_i) fires 3.0 on the
    words of letter i. The last 18 words of each letter are held out. `absorbed` held-out 'a' words have latent 0
    silent and their own token-like latent (decoder (e_a + e_{20+j}) / sqrt 2, never seen in training) carrying
    the letter instead. With `split_b`, letter b's words alternate between latents 1 and 45 (feature splitting).
    Latents 10-39 are distractors firing at random on directions in dims 40-63; dims 40-63 also carry noise that
    no latent reconstructs."""
    g = torch.Generator().manual_seed(seed)
    L, D, F = 5, 64, 64
    W_dec_FD = torch.zeros(F, D)
    for i in range(L):
        W_dec_FD[i, i] = 1.0
    W_dec_FD[45, 1] = 1.0
    W_dec_FD[10:40, 40:] = torch.nn.functional.normalize(torch.randn(30, 24, generator=g), dim=-1)
    N = L * n_per_letter
    letters = [c for c in "abcde" for _ in range(n_per_letter)]
    z_NF = torch.zeros(N, F)
    test = [i * n_per_letter + j for i in range(L) for j in range(n_per_letter - 18, n_per_letter)]
    train = sorted(set(range(N)) - set(test))
    for n, c in enumerate(letters):
        z_NF[n, "abcde".index(c)] = 3.0
    if split_b:
        b_words = [n for n, c in enumerate(letters) if c == "b"]
        for n in b_words[1::2]:
            z_NF[n, 1], z_NF[n, 45] = 0.0, 3.0
    a_test = [n for n in test if letters[n] == "a"]
    for j, n in enumerate(a_test[:absorbed]):
        f = 50 + j
        W_dec_FD[f] = 0.0
        W_dec_FD[f, 0] = W_dec_FD[f, 20 + j] = 2 ** -0.5
        z_NF[n, 0], z_NF[n, f] = 0.0, 3.0 * 2 ** 0.5
    z_NF[:, 10:40] = (torch.rand(N, 30, generator=g) < 0.1) * torch.rand(N, 30, generator=g) * 2
    x_ND = z_NF @ W_dec_FD
    x_ND[:, 40:] += 0.2 * torch.randn(N, 24, generator=g)
    return x_ND, z_NF, W_dec_FD, letters, train, test


def test_absorption_known_rate():
    x, z, W, letters, train, test = letter_world(absorbed=5)
    df = first_letter_absorption(x, z, W, letters, train, test)
    assert df["evaluated"].all() and (df["probe_f1"] == 1.0).all()
    assert df.loc["a", "main_latents"] == [0]  # the absorbing latents never fire in training: no split
    assert df.loc["a", "n_true_positives"] == 18 and df.loc["a", "n_full_absorption"] == 5
    assert df.loc["a", "full_absorption_rate"] == 5 / 18
    assert df.loc["a", "absorption_fraction"] == pytest.approx(5 / 18)  # 1 on the absorbed words, 0 elsewhere
    assert (df.drop(index="a")["full_absorption_rate"] == 0).all()
    assert df.attrs["overall"] == pytest.approx(5 / 18 / 5) and df.attrs["n_letters"] == 5


def test_no_absorption_gives_zero():
    df = first_letter_absorption(*letter_world(absorbed=0))
    assert (df["full_absorption_rate"] == 0).all() and (df["absorption_fraction"] == 0).all()
    assert df.attrs["overall"] == 0 and df.attrs["mean_split_latents"] == 1
    assert [df.loc[c, "main_latents"] for c in "abcde"] == [[0], [1], [2], [3], [4]]


def test_feature_splitting_finds_the_planted_split():
    x, z, W, letters, train, test = letter_world(split_b=True)
    df = first_letter_absorption(x, z, W, letters, train, test)
    assert sorted(df.loc["b", "main_latents"]) == [1, 45] and df.loc["b", "split_f1"] == 1.0
    assert df.loc["b", "full_absorption_rate"] == 0 and df.loc["a", "n_split_latents"] == 1
    # the parts: the L1 probe ranks the two halves first; F1 jumps from k=1 to k=2, then stops
    cls = torch.tensor(["abcde".index(c) for c in letters])
    tr, te = torch.tensor(train), torch.tensor(test)
    ranking = l1_latent_weights(z[tr], cls[tr], 5)[1]
    assert set(ranking.topk(2).indices.tolist()) == {1, 45}
    probes = k_sparse_f1(z[tr], cls[tr] == 1, z[te], cls[te] == 1, ranking, max_k=4)
    assert probes[0][1] < 0.8 and probes[1][1] == 1.0
    assert split_latents(probes) == probes[1][0]
    assert split_latents([([3], 0.5), ([3, 7], 0.52), ([3, 7, 9], 0.9)]) == [3]  # +0.02 < f1_jump stops the search


def test_ranking_keys_put_weighted_latents_first_then_mean_difference():
    z = torch.zeros(6, 4)
    z[:3, 2] = 1.0  # latent 2 fires on class 0 only
    z[3:, 3] = 1.0  # latent 3 fires on class 1 only
    cls = torch.tensor([0, 0, 0, 1, 1, 1])
    z[5, 0], z[5, 1] = 1.0, 9.0  # latents 0 and 1 fire on one word of class 1
    w = torch.zeros(2, 4)
    w[1, 0], w[1, 1] = 0.5, 2.0  # L1 weights outrank any mean difference
    keys = ranking_keys(w, z, cls)
    assert keys[0].argmax() == 2 and (keys[0][[1, 3]] < 0).all()  # all weights zeroed: the class-mean difference decides
    # weighted latents by weight x mean activation on the class (2 x 3 > 0.5 x 1/3), then latent 3 by mean difference
    assert keys[1].topk(3).indices.tolist() == [1, 0, 3]
    w[1, 1] = 0.0
    assert keys[1].topk(3).indices.tolist() == [1, 0, 3] and ranking_keys(w, z, cls)[1].topk(3).indices.tolist() == [0, 1, 3]  # unweighted: mean difference 3 > 1


def test_word_absorption_full_and_partial():
    W = torch.zeros(3, 4)
    W[0, 0] = 1.0  # main latent, along the probe
    W[1, 0] = W[1, 1] = 2 ** -0.5  # absorbing latent, cosine 0.71 with the probe
    W[2, 2] = 1.0  # unrelated latent
    r = 2 ** 0.5
    z = torch.tensor([[1.5, 1.5 * r, 0.0],  # half each: fraction 0.5
                      [2.5, 0.5 * r, 1.0],  # absorber carries 1/6 < 0.4: fraction 0
                      [0.0, 3.0 * r, 0.0],  # main silent, absorber carries all: full absorption, fraction 1
                      [3.0, 0.0, 0.0],      # main alone: none
                      [0.0, 0.0, 2.0]])     # main silent but nothing along the probe: none
    x = z @ W
    full, frac, top = word_absorption(x, z, W, torch.tensor([1.0, 0, 0, 0]), [0])
    assert full.tolist() == [False, False, True, False, False]
    assert frac.tolist() == pytest.approx([0.5, 0.0, 1.0, 0.0, 0.0])
    assert top[2] == 1
    # a stricter share threshold turns the half-absorbed word down; a cosine floor above 0.71 removes the absorber
    assert word_absorption(x, z, W, torch.tensor([1.0, 0, 0, 0]), [0], min_share=0.6)[1][0] == 0
    assert not word_absorption(x, z, W, torch.tensor([1.0, 0, 0, 0]), [0], full_min_cos=0.8)[0].any()


def test_absorption_rejects_bad_shapes():
    x, z, W, letters, train, test = letter_world()
    with pytest.raises(EvalError, match="shapes disagree"):
        first_letter_absorption(x, z[:, :10], W, letters, train, test)
    with pytest.raises(EvalError, match="overlap"):
        first_letter_absorption(x, z, W, letters, train, train[:5])


@pytest.mark.real_model
def test_real_model_pipeline(real_model):
    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    stats = saekit.pretrained.stats("gemma-3-270m", "resid_post.6")
    rep = run(real_model, sae, stats, evals=["autointerp", "absorption"], progress=False,
              options={"autointerp": {"n_features": 4, "n_non": 4, "set_labels": False},
                       "absorption": {"n_words": 800, "n_icl": 2, "min_words": 10}})
    auto = rep.details["autointerp"]
    assert len(auto) > 0 and auto["verified"].all()
    ab = rep.details["absorption"]
    assert ab.attrs["n_letters"] > 0 and 0 <= ab.attrs["overall"] <= 1 and 0 <= ab.attrs["absorption_fraction"] <= 1
    assert (ab["n_split_latents"] >= 1).all() and (ab["n_true_positives"] <= ab["n_test"]).all()
    metrics = set(rep.table[rep.table["eval"] == "absorption"]["metric"])
    assert {"full_absorption_rate", "absorption_fraction", "mean_split_latents"} <= metrics
    # the prompt is read at the word: every row has the same length and the word at the same place
    rows, pos = icl_rows(real_model.tokenizer, [real_model.tokenizer.convert_tokens_to_ids("\u2581cat")], [[]])
    assert real_model.tokenizer.decode(rows[0][pos]) == " cat"
    assert real_model.tokenizer.decode(rows[0][pos:]) == " cat has the first letter:"


def test_local_backend_pipeline_end_to_end(tiny):
    model, sae, stats = tiny
    feats = list(autointerp(stats, n_features=32, set_labels=False, progress=False).table().index[:2])
    llm = LocalBackend(model, max_new_tokens=4)
    assert llm.complete([{"role": "user", "content": "hi"}]) is not None
    res = autointerp(stats, feats, model=model, sae=sae, explainer=llm, set_labels=False, progress=False)
    # a random tiny model's replies are noise: each feature is scored or counted as malformed, none lost
    assert len(res.rows) + res.skipped.get("malformed_reply", 0) == len(feats)


def test_cli_eval_options_come_from_evals_config(capsys):
    from saekit.cli import build_parser, main
    from saekit.config import EvalsConfig

    args = build_parser().parse_args(["eval", "some_sae", "--evals", "autointerp,absorption", "--n-words", "500"])
    assert args.evals == ["autointerp,absorption"] and args.n_words == 500
    assert EvalsConfig(evals=tuple(args.evals)).evals == ("autointerp", "absorption")
    assert main(["eval", "some_sae", "--evals", "nope"]) == 2  # refused before anything loads
    assert "unknown evaluation" in capsys.readouterr().err
