"""Harvesting: BOS/pad dropped, shards with checksums, resume after a kill, NaN rejected, many hook points."""

import json

import pytest
import torch

import saekit
from saekit import ActivationCache, HarvestConfig
from saekit.harvest import HarvestError
from saekit.store import CacheError, ShuffleBuffer
from saekit.stream import cached_activations
from tiny import tiny_model

TEXTS = [("The quick brown fox jumps over the lazy dog. " * 6)[: 40 + 13 * i] for i in range(40)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("gemma3")


def test_harvest_keeps_text_positions_only(model, tmp_path):
    cfg = HarvestConfig(hookpoints=("resid_post.1",), context_len=64, batch_size=4)
    cache = saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=10**6, out=tmp_path / "c", progress=False)
    ctx = saekit.contexts(model, TEXTS, context_len=64)
    assert cache.n_tokens == int(ctx.attention_mask.sum()) - len(ctx)  # every real token but BOS
    tok = cache.load("token_ids")
    assert not (tok == model.bos_token_id).any()
    assert (cache.load("position") >= 1).all()
    # the rows are the activations at those positions
    acts = model.capture(ctx.input_ids[:4], ["resid_post.1"], attention_mask=ctx.attention_mask[:4])["resid_post.1"]
    ci, pos = cache.load("context_index"), cache.load("position")
    first = (ci == 0).nonzero().squeeze(-1)
    torch.testing.assert_close(cache.load()[first], acts[0, pos[first].long()])


def test_several_hookpoints_in_one_pass_and_manifest(model, tmp_path):
    cfg = HarvestConfig(hookpoints=("mlp_in.2", "mlp_out.2", "resid_post.0"), context_len=32)
    cache = saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=500, out=tmp_path / "c", shard_tokens=128, progress=False)
    assert cache.n_tokens == 500 and len(cache.shards) > 1
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["hookpoints"] == list(cfg.hookpoints) and all("sha256" in s for s in m["shards"])
    reopened = ActivationCache.open(tmp_path / "c")
    reopened.verify()
    assert all(reopened.load(h).shape == (500, model.d_model) for h in cfg.hookpoints)


def test_interrupted_harvest_resumes_and_equals_an_uninterrupted_one(model, tmp_path, monkeypatch):
    cfg = HarvestConfig(hookpoints=("resid_post.1",), context_len=32, batch_size=2)
    full = saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=1500, out=tmp_path / "full", shard_tokens=64, progress=False)
    real_capture = type(model).capture
    calls = {"n": 0}

    def dying_capture(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt("killed")
        return real_capture(self, *a, **kw)

    monkeypatch.setattr(type(model), "capture", dying_capture)
    with pytest.raises(KeyboardInterrupt):
        saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=1500, out=tmp_path / "part", shard_tokens=64, progress=False)
    partial = ActivationCache.open(tmp_path / "part")
    assert 0 < partial.n_tokens < 1500  # finished shards survived the kill
    monkeypatch.setattr(type(model), "capture", real_capture)
    resumed = saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=1500, out=tmp_path / "part", shard_tokens=64, progress=False)
    assert resumed.n_tokens == 1500
    torch.testing.assert_close(resumed.load(), full.load())
    assert torch.equal(resumed.load("token_ids"), full.load("token_ids"))


def test_nan_activations_are_a_clear_error(model, monkeypatch):
    real_capture = type(model).capture

    def nan_capture(self, *a, **kw):
        out = real_capture(self, *a, **kw)
        return {k: torch.full_like(v, float("nan")) for k, v in out.items()}

    monkeypatch.setattr(type(model), "capture", nan_capture)
    with pytest.raises(HarvestError, match="NaN or inf"):
        saekit.harvest(model, TEXTS, hookpoints="resid_post.0", n_tokens=100, progress=False)


def test_short_user_texts_harvest_every_token_and_resume(model, tmp_path):
    """Users' short texts are contexts narrower than context_len (trimmed padding); the cache still records
    the requested context_len, its rows replay on that grid, and a rerun with the same settings reuses it."""
    short = ["Hi.", "The Eiffel Tower is in Paris.", "   "]
    cfg = HarvestConfig(hookpoints=("resid_post.1",), context_len=64, batch_size=2)
    ctx = saekit.contexts(model, short, context_len=64)
    assert len(ctx) == 2 and ctx.input_ids.shape[1] < 64 and bool(ctx.attention_mask[1].all())
    cache = saekit.harvest(model, short, cfg=cfg, n_tokens=10**6, out=tmp_path / "c", progress=False)
    assert cache.info["context_len"] == 64 and cache.n_tokens == int(ctx.attention_mask.sum()) - len(ctx)
    acts = model.capture(ctx.input_ids, ["resid_post.1"], attention_mask=ctx.attention_mask)["resid_post.1"]
    keep = ctx.attention_mask.bool() & (ctx.input_ids != model.bos_token_id)
    torch.testing.assert_close(cache.load(), acts[keep])
    (batch,) = cached_activations(cache, ["resid_post.1"], batch_size=8)
    assert batch.keep.shape == (2, 64) and batch.n_tokens == cache.n_tokens
    again = saekit.harvest(model, short, cfg=cfg, n_tokens=10**6, out=tmp_path / "c", progress=False)
    assert again.shards == cache.shards


def test_bad_hookpoint_fails_before_any_forward(model, monkeypatch):
    monkeypatch.setattr(type(model), "capture", lambda *a, **k: pytest.fail("ran the model"))
    with pytest.raises(ValueError, match="out of range"):
        saekit.harvest(model, TEXTS, hookpoints="resid_post.9", n_tokens=100, progress=False)


def test_other_settings_in_an_existing_folder_are_refused(model, tmp_path):
    saekit.harvest(model, TEXTS, hookpoints="resid_post.0", n_tokens=100, out=tmp_path / "c", progress=False)
    with pytest.raises(HarvestError, match="other settings"):
        saekit.harvest(model, TEXTS, hookpoints="resid_post.1", n_tokens=100, out=tmp_path / "c", progress=False)


def test_corrupt_shard_is_detected(model, tmp_path):
    cache = saekit.harvest(model, TEXTS, hookpoints="resid_post.0", n_tokens=100, out=tmp_path / "c", progress=False)
    shard = tmp_path / "c" / cache.shards[0]["file"]
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="corrupt"):
        ActivationCache.open(tmp_path / "c").verify()


def test_cache_batches_are_seeded_permutations_and_resume_mid_epoch():
    x = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 3)
    cache = ActivationCache(["h"], {"h": 3}, tensors={"h": x}, shards=[{"rows": 40}])
    batches = list(cache.batches("h", 8, seed=3, epochs=2))
    assert len(batches) == 10
    first_epoch = torch.cat(batches[:5])[:, 0].sort().values
    assert torch.equal(first_epoch, torch.arange(40.0))
    later = list(cache.batches("h", 8, seed=3, epochs=2, start_batch=7))
    assert all(torch.equal(a, b) for a, b in zip(later, batches[7:]))


def test_shuffle_buffer_yields_every_row_once():
    chunks = [torch.arange(i * 100, (i + 1) * 100, dtype=torch.float32)[:, None] for i in range(10)]
    out = torch.cat(list(ShuffleBuffer(chunks, capacity=300, batch_size=50)))
    assert torch.equal(out[:, 0].sort().values, torch.arange(1000.0))
    assert not torch.equal(out[:, 0], torch.arange(1000.0))


def test_bfloat16_storage_halves_the_cache(model, tmp_path):
    cfg32 = HarvestConfig(hookpoints=("resid_post.1",), context_len=32)
    cfg16 = HarvestConfig(hookpoints=("resid_post.1",), context_len=32, dtype="bfloat16")
    a = saekit.harvest(model, TEXTS, cfg=cfg32, n_tokens=300, progress=False).load()
    b = saekit.harvest(model, TEXTS, cfg=cfg16, n_tokens=300, progress=False).load()
    assert a.dtype == torch.float32 and b.dtype == torch.bfloat16
    torch.testing.assert_close(b.float(), a, rtol=1e-2, atol=1e-2)
