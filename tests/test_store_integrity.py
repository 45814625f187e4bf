"""Damaged caches are caught when read, with a saekit error naming the shard and the fix; writes are durable."""

from __future__ import annotations

import json
import os

import pytest
import torch
from tiny import tiny_model

import saekit
from saekit import durable
from saekit.errors import CacheError, SaekitError
from saekit.store import ActivationCache

TEXTS = [("The quick brown fox jumps over the lazy dog. " * 6)[: 40 + 13 * i] for i in range(40)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("gemma3")


@pytest.fixture()
def cache_dir(model, tmp_path):
    cfg = saekit.HarvestConfig(hookpoints=("resid_post.1",), context_len=32, batch_size=4)
    cache = saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=600, shard_tokens=200, out=tmp_path / "c", progress=False)
    assert len(cache.shards) >= 3
    return tmp_path / "c"


def _flip_exponent_bit(path, offset_from_end=6):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x40  # an exponent bit of one float32 value: the value changes a lot, the file parses
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_is_caught_on_first_read_by_load_and_batches(cache_dir):
    good = ActivationCache.open(cache_dir).load()
    shard = cache_dir / ActivationCache.open(cache_dir).shards[1]["file"]
    _flip_exponent_bit(shard)
    for read in (lambda c: c.load(), lambda c: next(iter(c.batches(batch_size=64))), lambda c: c.load("token_ids")):
        with pytest.raises(CacheError, match=r"shard_00001.*corrupt.*harvest") as err:
            read(ActivationCache.open(cache_dir))
        assert isinstance(err.value, SaekitError)
    assert ActivationCache.open(cache_dir).bad_shards() == [1]
    assert good.shape[0] == ActivationCache.open(cache_dir).n_tokens


def test_each_shard_is_hashed_once_per_cache_object(cache_dir, monkeypatch):
    import saekit.store as store

    calls = []
    real = store._sha256
    monkeypatch.setattr(store, "_sha256", lambda p: calls.append(p.name) or real(p))
    cache = ActivationCache.open(cache_dir)
    cache.load()
    cache.load("token_ids")
    list(cache.batches(batch_size=64))
    assert sorted(calls) == sorted(s["file"] for s in cache.shards)
    cache.verify()  # an explicit verify re-hashes everything
    assert len(calls) == 2 * len(cache.shards)


def test_truncated_or_missing_shards_and_a_damaged_manifest_name_the_file(cache_dir):
    cache = ActivationCache.open(cache_dir)
    shard = cache_dir / cache.shards[0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CacheError, match="shard_00000.*corrupt"):
        ActivationCache.open(cache_dir).load()
    # a file whose checksum matches the manifest but that safetensors cannot parse (bad header)
    shard.write_bytes(b"\xff" * 64)
    m = json.loads((cache_dir / "manifest.json").read_text())
    m["shards"][0]["sha256"] = __import__("hashlib").sha256(b"\xff" * 64).hexdigest()
    (cache_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match="shard_00000.*unreadable"):
        ActivationCache.open(cache_dir).load()
    (cache_dir / cache.shards[2]["file"]).unlink()
    with pytest.raises(CacheError, match="shard_00002.*missing"):
        ActivationCache.open(cache_dir).shard(2, "resid_post.1")
    (cache_dir / "manifest.json").write_text('{"format": 1, "hookpoints": ')
    with pytest.raises(CacheError, match="manifest.json is damaged"):
        ActivationCache.open(cache_dir)


def test_shards_record_the_contexts_they_hold(cache_dir):
    cache = ActivationCache.open(cache_dir)
    spans = [s["contexts"] for s in cache.shards]
    assert spans[0][0] == 0 and spans[-1][1] == cache.info["contexts_done"]
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))
    ci = cache.load("context_index")
    for i, (lo, hi) in enumerate(spans):
        rows = cache.shard(i, "context_index")
        assert int(rows.min()) >= lo and int(rows.max()) < hi
    assert ci.shape[0] == cache.n_tokens


def test_durable_writes_leave_no_temporary_files_and_fsync(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    durable.write_json({"a": 1}, tmp_path / "x.json")
    durable.save_tensors({"t": torch.arange(3.0)}, tmp_path / "t.safetensors")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors", "x.json"]
    assert len(synced) >= 4  # each file and its folder
    (tmp_path / "d" / "e").mkdir(parents=True)
    durable.remove_tree(tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors", "x.json"]


def test_rerunning_the_harvest_reharvests_only_the_damaged_shards_bit_for_bit(model, cache_dir, monkeypatch):
    """A flipped bit in one shard and a deleted other shard: the same harvest call again re-verifies every
    shard, harvests just those two again from their recorded contexts, and the cache equals the original."""
    cfg = saekit.HarvestConfig(hookpoints=("resid_post.1",), context_len=32, batch_size=4)
    cache = ActivationCache.open(cache_dir)
    files = [cache_dir / s["file"] for s in cache.shards]
    original = [f.read_bytes() for f in files]
    shas = [s["sha256"] for s in cache.shards]
    untouched_mtime = files[0].stat().st_mtime_ns
    _flip_exponent_bit(files[1])
    files[-1].unlink()

    seen: list[int] = []
    real_capture = model.capture

    def counting_capture(ids, *a, **kw):
        seen.append(ids.shape[0])
        return real_capture(ids, *a, **kw)

    monkeypatch.setattr(model, "capture", counting_capture)
    again = saekit.harvest(model, TEXTS, cfg=cfg, n_tokens=600, shard_tokens=200, out=cache_dir, progress=False)
    spans = [cache.shards[i]["contexts"] for i in (1, len(files) - 1)]
    assert sum(seen) == sum(hi - lo for lo, hi in spans)  # only the two damaged shards' contexts ran again
    assert [f.read_bytes() for f in files] == original
    assert [s["sha256"] for s in ActivationCache.open(cache_dir).shards] == shas
    assert files[0].stat().st_mtime_ns == untouched_mtime
    assert ActivationCache.open(cache_dir).bad_shards() == []
    assert torch.equal(again.load(), ActivationCache.open(cache_dir).load())


def test_half_written_files_of_killed_writers_are_cleaned_up(cache_dir, tmp_path):
    """A kill between writing a temporary file and renaming it leaves `.<name>.tmp-<pid>`; the next open of
    the cache (or save of an SAE) deletes those of dead processes and keeps a live writer's."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = cache_dir / f".shard_00009.safetensors.tmp-{dead_pid}"
    live = cache_dir / f".shard_00010.safetensors.tmp-{os.getpid()}"
    stale.write_bytes(b"half a shard")
    live.write_bytes(b"being written")
    ActivationCache.open(cache_dir)
    assert not stale.exists() and live.exists()
    live.unlink()
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    (sae_dir / f".sae_weights.safetensors.tmp-{dead_pid}").write_bytes(b"half")
    saekit.Sae(saekit.SaeConfig(d_in=8, n_latents=16, k=2)).save(sae_dir)
    assert sorted(p.name for p in sae_dir.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
