"""The one activation stream: exactly model.capture's activations at kept positions, with their token ids,
context indices and positions, for tokenizers with and without BOS; resumable; replayable from a harvest."""

from __future__ import annotations

import pytest
import torch
from tiny import byte_tokenizer, tiny_hf_model

import saekit
from saekit.stream import cached_activations, stream_activations
from saekit.tokens import keep_mask

HPS = ["resid_post.1", "mlp_out.0"]
TEXTS = [("the quick brown fox jumps over the lazy dog, " * 3)[: 20 + 7 * i] for i in range(11)]


def no_bos_tokenizer():
    """Qwen-style: an EOS token and padding, no BOS."""
    tok = byte_tokenizer()
    tok.bos_token = None
    return tok


@pytest.fixture(scope="module", params=["bos", "no_bos"])
def setup(request):
    """(model, contexts) for a tokenizer with a BOS token and one without (EOS starts each context)."""
    tok = byte_tokenizer() if request.param == "bos" else no_bos_tokenizer()
    model = saekit.load_model(tiny_hf_model("qwen2"), tokenizer=tok)
    ctx = saekit.contexts(model, TEXTS, context_len=40, min_tokens=2)
    assert (ctx.attention_mask == 0).any(), "some contexts are padded"
    return model, ctx


def test_rows_are_captures_at_kept_positions(setup):
    """Each batch holds model.capture's activations at exactly the kept positions, in (context, position) order."""
    model, ctx = setup
    sep = model.separator_id
    batches = list(stream_activations(model, ctx, HPS, batch_size=3))
    assert [b.context.tolist() for b in batches] == [list(range(s, min(s + 3, len(ctx)))) for s in range(0, len(ctx), 3)]
    for b in batches:
        s, e = int(b.context[0]), b.end
        ids, mask = ctx.input_ids[s:e], ctx.attention_mask[s:e]
        want = model.capture(ids, HPS, attention_mask=mask)
        keep = mask.bool() & (ids != sep)
        assert torch.equal(b.keep, keep) and torch.equal(b.input_ids, ids) and torch.equal(b.attention_mask, mask)
        rows_c, rows_t = keep.nonzero(as_tuple=True)
        for h in HPS:
            assert torch.equal(b.acts[h], want[h][rows_c, rows_t])
            assert torch.equal(b.grid(b.acts[h])[keep], want[h][keep]) and not b.grid(b.acts[h])[~keep].any()
        assert torch.equal(b.token_ids, ids[rows_c, rows_t])
        assert torch.equal(b.context_index, rows_c + s) and torch.equal(b.position, rows_t)
        assert not (b.token_ids == sep).any() and (b.position >= 1).all()
    assert sum(b.n_tokens for b in batches) == int(keep_mask(ctx.input_ids, ctx.attention_mask, sep).sum())


def test_rows_do_not_depend_on_the_batch_size(setup):
    """The same rows, to float rounding, whatever the batching."""
    model, ctx = setup
    one = list(stream_activations(model, ctx, HPS, batch_size=len(ctx)))[0]
    for bs in (1, 4):
        parts = list(stream_activations(model, ctx, HPS, batch_size=bs))
        for h in HPS:
            torch.testing.assert_close(torch.cat([p.acts[h] for p in parts]), one.acts[h], rtol=1e-5, atol=1e-5)
        assert torch.equal(torch.cat([p.context_index for p in parts]), one.context_index)


def test_resumes_from_a_context_offset(setup):
    """start=k yields the contexts from k on: the same batches as an uninterrupted stream where they align."""
    model, ctx = setup
    full = list(stream_activations(model, ctx, HPS, batch_size=2))
    resumed = list(stream_activations(model, ctx, HPS, batch_size=2, start=full[2].end - 2))
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a.context, b.context) and all(torch.equal(a.acts[h], b.acts[h]) for h in HPS)
    odd = list(stream_activations(model, ctx, HPS, batch_size=2, start=5))
    assert int(odd[0].context[0]) == 5 and odd[-1].end == len(ctx)
    tail = torch.cat([b.context_index for b in full])
    torch.testing.assert_close(
        torch.cat([b.acts[HPS[0]] for b in odd]), torch.cat([b.acts[HPS[0]] for b in full])[tail >= 5], rtol=1e-5, atol=1e-5
    )


def test_options_dtype_device_and_keeping_the_separator(setup):
    model, ctx = setup
    (b,) = stream_activations(model, ctx[:3], HPS, batch_size=3, drop_separator=False, dtype=torch.bfloat16)
    assert b.keep[:, 0].all() and b.acts[HPS[0]].dtype == torch.bfloat16 and b.acts[HPS[0]].device.type == "cpu"
    (c,) = stream_activations(model, ctx[:3], HPS, batch_size=3, drop_separator=False, drop_pad=False)
    assert c.keep.all() and c.n_tokens == 3 * ctx.input_ids.shape[1]


def test_unknown_hookpoint_fails_before_any_forward(setup, monkeypatch):
    model, ctx = setup
    monkeypatch.setattr(type(model), "capture", lambda *a, **k: pytest.fail("ran the model"))
    with pytest.raises(ValueError, match="out of range"):
        next(stream_activations(model, ctx, ["resid_post.9"], batch_size=2))


def test_a_harvest_replays_as_the_same_rows(setup):
    """cached_activations gives back the stream's rows, token ids and positions, without the model."""
    model, ctx = setup
    cache = saekit.harvest(model, ctx, hookpoints=HPS, n_tokens=10**6, progress=False)
    live = list(stream_activations(model, ctx, HPS, batch_size=4))
    replay = list(cached_activations(cache, HPS, batch_size=4))
    assert len(live) == len(replay)
    for a, b in zip(live, replay):
        assert torch.equal(a.context, b.context) and torch.equal(a.keep, b.keep)
        assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.position, b.position)
        assert all(torch.equal(a.acts[h], b.acts[h]) for h in HPS)
        assert (b.input_ids[~b.keep] == -1).all()
