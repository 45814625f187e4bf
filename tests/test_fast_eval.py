"""The fast evaluation path (Model.score_runs: stacked runs, shared blocks, chunked head) gives the
readable reference path's values: per-position NLL and KL, every architecture's `evaluate` metrics,
transcoders included, and `loss_change`."""

import pytest
import torch

import saekit
from saekit import Sae, SaeConfig
from saekit.interventions import Ablate, Splice, Steer, loss_change
from saekit.lm.head_scores import head_scores
from saekit.metrics import _zero_at, _zero_stream_nll, kl_divergence
from saekit.tokens import keep_mask
from tiny import ARCHS as MODEL_ARCHS
from tiny import tiny_model

TEXTS = [f"Paris is the capital of France. Line {i}: the cat sat on the mat, {i * 7} times. " for i in range(16)]
SAE_ARCHS = ["topk", "batchtopk", "matryoshka", "relu", "jumprelu", "gated", "transcoder", "skip_transcoder"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ragged(model, n: int = 3, T: int = 20):
    """A batch with padding at the end of some rows."""
    ctx = saekit.contexts(model, TEXTS, context_len=T, n_tokens=n * T)
    ids, mask = ctx.input_ids[:n].clone(), ctx.attention_mask[:n].clone()
    mask[1, T - 6 :] = 0
    ids[1, T - 6 :] = model.pad_token_id
    return ids, mask


@pytest.mark.parametrize("V,chunk_bytes", [(37, 1 << 30), (1000, 4 * 2 * 5 * 256)])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_head_scores_equal_log_softmax(V, chunk_bytes, softcap):
    """Chunked online scores = log_softmax of whole logits (one chunk, and many chunks)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 8, generator=g) * 3
    W, b = torch.randn(V, 8, generator=g), torch.randn(V, generator=g)
    tgt = torch.randint(0, V, (5,), generator=g)
    out = head_scores(h, W, b, tgt, softcap=softcap, chunk_bytes=chunk_bytes)
    z = h @ W.t() + b
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    logp = torch.log_softmax(z.double(), -1)
    nll = -logp.gather(-1, tgt.view(1, 5, 1).expand(3, 5, 1)).squeeze(-1)
    torch.testing.assert_close(out["nll"], nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["kl"], kl_divergence(logp[:1], logp), rtol=1e-5, atol=1e-5)
    tgt_NK = torch.randint(0, V, (5, 4), generator=g)  # four candidate next tokens per row, one vocabulary pass
    many = head_scores(h, W, b, tgt_NK, softcap=softcap, chunk_bytes=chunk_bytes, kl=False)["nll"]
    torch.testing.assert_close(many, -logp.gather(-1, tgt_NK.expand(3, 5, 4)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", MODEL_ARCHS)
@pytest.mark.parametrize("hookpoint", ["resid_post.1", "resid_pre.1", "mlp_out.0", "embed"])
def test_score_runs_equal_compare_and_token_nll(arch, hookpoint):
    """Clean, spliced and zero-ablated runs in one forward = the reference traces, on every model family,
    at hook points before, at and inside blocks (shared blocks: 2, 1, 0, 0), with padding."""
    model = tiny_model(arch)
    if arch == "gemma2":  # a soft cap small enough to matter for a tiny model's logits
        model.config.final_logit_softcapping = 0.5
    ids, mask = ragged(model)
    keep = model._keep(ids, mask)
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint=hookpoint), seed=1)
    splice = Splice(sae, error_term=False)
    zero = {hookpoint: _zero_at(keep)}
    out = model.score_runs(ids, [splice, zero], mask, reads=[hookpoint, "resid_post.2"])
    ref = model.compare(ids, splice, mask, tokens=range(model.vocab_size), top=0)
    nll_zero = model.token_nll(ids, mask, edits=zero)
    score = mask[:, 1:].bool()
    close = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["nll"][0][score].float(), ref["nll_clean"][score], **close)
    torch.testing.assert_close(out["nll"][1][score].float(), ref["nll_edited"][score], **close)
    torch.testing.assert_close(out["nll"][2][score].float(), nll_zero[score], **close)
    kl_ref = kl_divergence(ref["logp_clean"][:, :-1], ref["logp_edited"][:, :-1])
    torch.testing.assert_close(out["kl"][1][score].float(), kl_ref[score], **close)
    assert float(out["kl"][1][score].sum()) > 0 and bool((out["kl"][0] == 0).all())
    captured = model.capture(ids, [hookpoint, "resid_post.2"], mask)
    for h in (hookpoint, "resid_post.2"):
        torch.testing.assert_close(out["acts"][h][mask.bool()], captured[h][mask.bool()], **close)


@pytest.mark.parametrize("arch", MODEL_ARCHS)
@pytest.mark.parametrize("site", ["resid_post.1", "resid_pre.2", "embed"])
def test_zero_ablating_the_stream_is_scored_once_per_distinct_row(arch, site, monkeypatch):
    """With the whole residual stream zeroed at a site, rows that agree on `keep` and the tokens up to their last
    untouched attended position have the same losses wherever both attend (a right-padded row is a prefix of a full
    one), so `_zero_stream_nll` runs one row of each group: here rows 0 and 2 (full contexts starting with BOS) and
    row 1 (the same, padded at the end) share a run; row 3 (a BOS inside it, after tokens of its own) and row 4
    (padded at the start) run alone. Its
    losses equal the zero-ablated run of every row at every scored position."""
    model = tiny_model(arch)
    ids, mask = ragged(model, n=5)
    bos = model.tokenizer.bos_token_id
    if bos is None:
        pytest.skip(f"{arch}'s tiny tokenizer has no BOS")
    ids[:, 0] = bos
    ids[3, 12] = bos
    ids[4, 1:] = ids[0, :-1].clone()  # row 4: row 0 one step later, padded on the left: it runs alone
    ids[4, 0], mask[4, 0] = model.pad_token_id, 0
    keep = keep_mask(ids, mask, bos)
    assert keep[:, 0].logical_not().all() and not keep[3, 12] and not keep[4, 1] and keep[0, 1:].all()
    rows = []
    score_runs = model.score_runs
    monkeypatch.setattr(model, "score_runs", lambda ids_, *a, **k: rows.append(len(ids_)) or score_runs(ids_, *a, **k))
    got = _zero_stream_nll(model, site, ids, mask, keep)
    assert rows == [3]
    scored = mask[:, 1:].bool()
    every_row = score_runs(ids, [{site: _zero_at(keep)}], mask, kl=False)["nll"][1]  # no grouping
    torch.testing.assert_close(got[scored].float(), every_row[scored].float(), rtol=1e-4, atol=1e-4)
    # and the reference path's zero ablation, on the right-padded rows (for a left-padded row GPT-2's positions
    # differ between the nnsight trace and the plain forward, a difference of the paths, not of the grouping)
    want = model.token_nll(ids, mask, edits={site: _zero_at(keep)})
    torch.testing.assert_close(got[:4][scored[:4]].float(), want[:4][scored[:4]].float(), rtol=1e-4, atol=1e-4)
    other = model.token_nll(ids, mask)  # the zero ablation changed the losses: the comparison can fail
    assert (other[scored] - want[scored]).abs().max() > 1e-2


def trained_sae(model, arch: str, hookpoint: str = "resid_post.1", seed: int = 2) -> Sae:
    transcoder = arch.endswith("transcoder")
    hp, target = ("mlp_in.1", "mlp_out.1") if transcoder else (hookpoint, None)
    extra = {"jumprelu": {"target_l0": 4}, "matryoshka": {"matryoshka_prefixes": (16, 64)}}.get(arch, {})
    cfg = SaeConfig(d_in=model.d_model, n_latents=64, k=4, architecture=arch, hookpoint=hp, target_hookpoint=target, **extra)
    sae = Sae(cfg, seed=seed)
    ctx = saekit.contexts(model, TEXTS, context_len=24, n_tokens=200)
    acts = model.capture(ctx.input_ids, [hp] + ([target] if target else []), ctx.attention_mask)
    keep = ctx.attention_mask.bool()
    x = acts[hp][keep]
    sae.init_from_data(x, acts[target][keep] if target else None)
    return sae


@pytest.mark.parametrize("arch", SAE_ARCHS)
def test_evaluate_fast_equals_reference(arch):
    """Every metric of `evaluate` is the reference path's, for every architecture (transcoders: FVU of
    the MLP output, zero-ablation of the MLP output)."""
    model = tiny_model("gemma3")
    sae = trained_sae(model, arch)
    kw = dict(n_tokens=300, context_len=32, batch_size=3, progress=False)
    fast = saekit.evaluate(model, sae, TEXTS, **kw).to_dict()
    ref = saekit.evaluate(model, sae, TEXTS, reference=True, **kw).to_dict()
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-5), key
    assert ref["kl_divergence"] > 0 and ref["ce_zero_ablation"] != pytest.approx(ref["ce_clean"])


def test_loss_change_fast_equals_reference():
    model = tiny_model("llama")
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint="resid_post.1"), seed=3)
    edit = Ablate(sae, [0, 1, 2, 3, 4, 5])
    fast = loss_change(model, TEXTS, edit, n_tokens=200, context_len=24)
    ref = loss_change(model, TEXTS, edit, n_tokens=200, context_len=24, reference=True)
    assert fast.n_tokens == ref.n_tokens
    assert fast.loss_clean == pytest.approx(ref.loss_clean, rel=1e-5)
    assert fast.loss_edited == pytest.approx(ref.loss_edited, rel=1e-5)
    assert fast.loss_edited != pytest.approx(fast.loss_clean, rel=1e-6)


@pytest.mark.parametrize("runs_per_forward", [8, 2])
def test_loss_changes_equal_one_loss_change_each(runs_per_forward):
    """`loss_changes` shares the clean run (and, with 2, splits the edits into one forward each); every entry is what
    its own `loss_change` call gives, on the fast path and the reference path, and the entries differ."""
    model = tiny_model("llama")
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint="resid_post.1"), seed=3)
    edits = {"first six": Ablate(sae, [0, 1, 2, 3, 4, 5]), 7: [Ablate(sae, [7])], "steer": Steer(None, (sae, 9), 5.0)}
    kw = dict(n_tokens=200, context_len=24, batch_size=3)
    for reference in (False, True):
        many = saekit.loss_changes(model, TEXTS, edits, reference=reference, runs_per_forward=runs_per_forward, **kw)
        assert list(many) == list(edits)
        for name, e in edits.items():
            one = loss_change(model, TEXTS, e, reference=reference, **kw)
            assert many[name].n_tokens == one.n_tokens
            assert many[name].loss_clean == pytest.approx(one.loss_clean, rel=1e-6)
            assert many[name].loss_edited == pytest.approx(one.loss_edited, rel=1e-6)
    deltas = [lc.delta for lc in many.values()]
    assert len({round(d, 6) for d in deltas}) == 3, deltas


def test_loss_changes_refuses_what_it_cannot_run():
    model = tiny_model("llama")
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint="resid_post.1"), seed=3)
    with pytest.raises(saekit.errors.InterventionError, match="non-empty dict"):
        saekit.loss_changes(model, TEXTS, [Ablate(sae, [0])])
    with pytest.raises(saekit.errors.InterventionError, match="runs_per_forward"):
        saekit.loss_changes(model, TEXTS, {"a": Ablate(sae, [0])}, runs_per_forward=1)


def test_evaluate_many_equals_evaluate_alone(monkeypatch):
    """`evaluate_many` gives every SAE the metrics `evaluate` gives it alone: SAEs at different hook points, two at
    the same one (one shared zero-ablation), a transcoder (its zero-ablation at the MLP's output); in one forward
    per batch, split into groups when the runs exceed RUNS_PER_FORWARD, and named (a dict in, a dict out)."""
    import saekit.metrics as metrics

    model = tiny_model("gemma3")
    saes = {
        "topk@post1": trained_sae(model, "topk"),
        "jumprelu@post0": trained_sae(model, "jumprelu", "resid_post.0"),
        "topk@post1-b": trained_sae(model, "topk", seed=5),
        "transcoder": trained_sae(model, "transcoder"),
    }
    kw = dict(n_tokens=300, context_len=32, batch_size=3, progress=False)
    alone = {name: saekit.evaluate(model, sae, TEXTS, **kw).to_dict() for name, sae in saes.items()}
    assert alone["topk@post1"]["fvu"] != pytest.approx(alone["topk@post1-b"]["fvu"], rel=1e-3)  # distinct SAEs
    calls, stream_calls = [], []  # runs per forward of the batch; rows per forward of a whole-stream zero ablation
    score_runs = type(model).score_runs

    def counted(self, ids, runs, *a, **k):
        (calls.append(len(runs)) if k.get("score_clean", True) else stream_calls.append(len(ids)))
        return score_runs(self, ids, runs, *a, **k)

    monkeypatch.setattr(type(model), "score_runs", counted)
    n_batches = -(-len(saekit.contexts(model, TEXTS, context_len=32, n_tokens=300)) // 3)
    for limit in (8, 4):  # all in one forward (1 clean + 4 splices + the MLP's zero site), then in groups
        monkeypatch.setattr(metrics, "RUNS_PER_FORWARD", limit)
        calls.clear()
        stream_calls.clear()
        many = saekit.evaluate_many(model, saes, TEXTS, **kw)
        assert list(many) == list(saes)
        assert max(calls) + 1 <= limit and (calls == [5] * n_batches if limit == 8 else len(calls) > n_batches)
        # the two residual-stream zero ablations (resid_post.0 and .1) run apart, on one row of each 3-row batch
        assert stream_calls == [1] * 2 * n_batches if limit == 8 else stream_calls and max(stream_calls) == 1
        for name, result in many.items():
            got = result.to_dict()
            for key in alone[name]:
                assert got[key] == pytest.approx(alone[name][key], rel=1e-4, abs=1e-5), (limit, name, key)
    as_list = saekit.evaluate_many(model, list(saes.values()), TEXTS, **kw)
    assert [r.fvu for r in as_list] == pytest.approx([alone[n]["fvu"] for n in saes], rel=1e-4)


def test_evaluate_many_reference_path_and_bad_input():
    """reference=True evaluates each SAE by the readable path (same metrics as the fast one); no SAEs is an error."""
    model = tiny_model("gemma3")
    sae = trained_sae(model, "topk")
    kw = dict(n_tokens=300, context_len=32, batch_size=3, progress=False)
    (ref,) = saekit.evaluate_many(model, [sae], TEXTS, reference=True, **kw)
    fast = saekit.evaluate(model, sae, TEXTS, **kw).to_dict()
    for key, value in ref.to_dict().items():
        assert fast[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    with pytest.raises(saekit.errors.EvalError, match="no SAEs"):
        saekit.evaluate_many(model, [], TEXTS, **kw)
