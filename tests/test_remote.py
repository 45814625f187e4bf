"""The same saekit code on NDIF: weightless layout, remote='local' (nnsight's in-process serialisation),
and a loopback NDIF server on 127.0.0.1 (tests/ndif_loopback.py) driven through nnsight's real client.

Every remote result must equal the local one: bit for bit within one process (remote='local'), and to
float32 rounding across processes (the loopback server), see `same`."""

from __future__ import annotations

import math

import pytest
import torch
from ndif_loopback import start_server, stats, stop_server
from tiny import ARCHS, byte_tokenizer, tiny_hf_model

import saekit
from saekit import Ablate, Clamp, SaeConfig, Sae, Splice, Steer
from saekit.errors import ModelLoadError, RemoteError

HP = "resid_post.1"
TEXTS = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(12)]
KEY = "loopback-test-key-3141"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Gemma 3 saved as a model folder (config, weights, tokenizer), as a repo would hold it."""
    path = tmp_path_factory.mktemp("tiny-gemma3")
    tiny_hf_model("gemma3").save_pretrained(str(path))
    byte_tokenizer().save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def local(folder):
    return saekit.load_model(folder)


@pytest.fixture(scope="module")
def sae():
    return Sae(SaeConfig(d_in=32, n_latents=64, k=4, hookpoint=HP))


@pytest.fixture(scope="module")
def server(folder):
    proc, url = start_server(folder, api_key=KEY)
    yield url
    stop_server(proc)


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", KEY)


# Across processes, float32 results agree to rounding, not bit for bit: the server is another process whose
# kernels may split the same GEMM/reduction over a different number of threads (or another batch shape), and
# each split sums in another order. Each reordered fp32 sum is off by at most a few ulps of the magnitudes
# summed, so 16 ulps (eps = 1.19e-7) of the tensor's own scale is a tight bound that a real difference
# (a wrong edit, another layer, a dropped position) exceeds by orders of magnitude.
ULPS = 16 * torch.finfo(torch.float32).eps


def same(a, b) -> bool:
    """True when two results agree to float32 rounding (tensors, floats, or dicts/dataclasses of them)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and same(vars(a), vars(b))
    if isinstance(a, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        scale = float(a.abs().max()) if a.numel() else 0.0
        return bool(torch.allclose(a, b, rtol=ULPS, atol=ULPS * max(scale, 1.0)))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=ULPS, abs_tol=ULPS)
    return a == b


def _same_everywhere(local, remote, sae, check=same):
    """Run every saekit function on both models and assert equal results (`check`: the equality used)."""
    ids = local.encode_prompt("hello remote world")
    a, b = local.capture(ids, [HP, "mlp_out.0"]), remote.capture(ids, [HP, "mlp_out.0"])
    assert all(check(a[k], b[k]) for k in a)
    for edit in (Splice(sae), Ablate(sae, [5]), Clamp(sae, {2: 3.0}), Steer(None, (sae, 7), 5.0)):
        assert check(local.token_nll(ids, edits=edit), remote.token_nll(ids, edits=edit)), edit
    e1 = saekit.measure(local, "hello world", Steer(None, (sae, 7), 8.0), tokens=["a"])
    e2 = saekit.measure(remote, "hello world", Steer(None, (sae, 7), 8.0), tokens=["a"])
    assert check(e1.logp_edited, e2.logp_edited) and e1.top_up == e2.top_up
    g1 = saekit.generate(local, "hello", Steer(None, (sae, 7), 8.0), max_new_tokens=5, do_sample=True, seed=1)
    g2 = saekit.generate(remote, "hello", Steer(None, (sae, 7), 8.0), max_new_tokens=5, do_sample=True, seed=1)
    assert g1 == g2
    assert check(saekit.loss_change(local, TEXTS, Ablate(sae, [5]), reference=True), saekit.loss_change(remote, TEXTS, Ablate(sae, [5])))
    assert check(saekit.feature_means(local, sae, TEXTS, n_tokens=300), saekit.feature_means(remote, sae, TEXTS, n_tokens=300))
    h1 = saekit.harvest(local, TEXTS, hookpoints=HP, n_tokens=200, progress=False)
    h2 = saekit.harvest(remote, TEXTS, hookpoints=HP, n_tokens=200, progress=False)
    assert check(h1.load(), h2.load())
    r1 = saekit.evaluate(local, sae, TEXTS, n_tokens=200, progress=False, reference=True)  # remote runs take the reference path
    r2 = saekit.evaluate(remote, sae, TEXTS, n_tokens=200, progress=False)
    assert check(r1.to_dict(), r2.to_dict())


def bit_equal(a, b) -> bool:
    """Bit-for-bit equality (one process, same kernels, same shapes)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("arch", ARCHS)
def test_weightless_layout_from_a_small_clone_equals_the_probed_one(arch):
    from saekit.hookpoints import find_layers, probe_clone_roles

    real = saekit.load_model(tiny_hf_model(arch), tokenizer=byte_tokenizer())
    with torch.device("meta"):
        meta = type(real.hf_model)(real.hf_model.config)
    path, _ = find_layers(meta, real.n_layers)
    assert path == real.layout.layers_path
    assert probe_clone_roles(meta, path) == real.layout.roles


def test_remote_local_equals_local(local, folder, sae):
    remote = saekit.load_model(folder, remote="local")
    assert next(remote.hf_model.parameters()).device.type == "meta" or remote.remote == "local"
    assert remote.layout == local.layout and "remote='local'" in repr(remote)
    _same_everywhere(local, remote, sae, check=bit_equal)  # same process, same kernels: bit for bit


def test_loopback_server_equals_local(local, folder, sae, server, key):
    remote = saekit.load_model(folder, remote=server)
    assert next(remote.hf_model.parameters()).device.type == "meta"  # weightless here: the server runs it
    before = stats(server)
    _same_everywhere(local, remote, sae)
    after = stats(server)
    for path in ("requests", "ws_sessions", "inline_results", "url_results", "downloads", "compressed"):
        assert after[path] > before[path], path  # both result routes and the websocket were exercised


def test_loopback_errors_come_back_clearly(local, folder, sae, server, key, monkeypatch, capsys):
    remote = saekit.load_model(folder, remote=server)
    ids = local.encode_prompt("hello")
    with pytest.raises(RemoteError, match="shapes cannot be multiplied"):  # a failure on the server
        remote.token_nll(ids, edits={HP: lambda x: x @ torch.ones(3, 3)})
    monkeypatch.setenv("NDIF_API_KEY", "a-wrong-key-2718")
    with pytest.raises(RemoteError, match="API key") as err:
        remote.capture(ids, [HP])
    out = capsys.readouterr()
    assert "a-wrong-key-2718" not in str(err.value) + out.out + out.err
    assert KEY not in out.out + out.err


def test_wrong_key_is_refused_at_load_and_the_key_leaks_nowhere(local, folder, server, key, monkeypatch):
    """The status call carries the key: a server that checks it refuses a wrong key when the model is loaded.
    No saekit error chains back to an HTTP error (whose request holds the key), and the backend a run uses
    keeps no copy of the key (it would show in repr, vars or a pickle)."""
    import pickle

    monkeypatch.setenv("NDIF_API_KEY", "a-wrong-key-2718")
    with pytest.raises(RemoteError, match="refused the API key") as err:
        saekit.load_model(folder, remote=server)
    assert err.value.__context__ is None and err.value.__cause__ is None
    assert "a-wrong-key-2718" not in str(err.value)
    with pytest.raises(RemoteError, match="cannot reach") as err:
        saekit.load_model(folder, remote="http://127.0.0.1:9")
    assert err.value.__context__ is None  # the httpx error (and its request headers) is not kept

    monkeypatch.setenv("NDIF_API_KEY", KEY)
    remote = saekit.load_model(folder, remote=server)
    backend = remote._backend_kwargs()["backend"]
    assert backend.api_key == KEY  # read from the environment when the request is built
    dumped = repr(backend) + repr(vars(backend)) + repr(vars(remote))
    assert KEY not in dumped
    assert KEY.encode() not in pickle.dumps({k: v for k, v in vars(backend).items() if _picklable(v)})
    ids = local.encode_prompt("hello")
    monkeypatch.setenv("NDIF_API_KEY", "a-wrong-key-2718")
    with pytest.raises(RemoteError, match="API key") as err:  # a key that goes bad later: refused at the trace
        remote.capture(ids, [HP])
    assert err.value.__context__ is None and err.value.__cause__ is None


def _picklable(v) -> bool:
    import pickle

    try:
        pickle.dumps(v)
        return True
    except Exception:
        return False


def test_nonblocking_submit_and_poll(folder, server, key):
    """The loopback server also answers nnsight's non-blocking mode (submit over HTTP, poll /response)."""
    import time

    from nnsight import TransformersModel
    from nnsight.intervention.backends.remote import RemoteBackend

    remote = saekit.load_model(folder, remote=server)
    nn_model = remote._nn
    backend = RemoteBackend(remote._model_key(), host=server, api_key=KEY, blocking=False)
    ids = remote.encode_prompt("hello")
    with nn_model.trace(ids, backend=backend):
        out = nn_model.output.logits[:, -1].clone().save()
    assert backend.job_id is not None
    result = None
    for _ in range(200):
        result = backend()
        if result is not None:
            break
        time.sleep(0.05)
    want = saekit.load_model(folder).logits(ids)[:, -1]
    assert same(next(iter(result.values())), want)
    assert isinstance(nn_model, TransformersModel)


def test_missing_key_and_unreachable_server_fail_before_any_work(folder, monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    from nnsight.schema.config import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(RemoteError, match="NDIF_API_KEY"):
        saekit.load_model(folder, remote="http://127.0.0.1:9")
    monkeypatch.setenv("NDIF_API_KEY", KEY)
    with pytest.raises(RemoteError, match="cannot reach"):
        saekit.load_model(folder, remote="http://127.0.0.1:9")  # port 9 (discard): nothing listens
    with pytest.raises(ModelLoadError):
        saekit.load_model(saekit.DEFAULT_MODEL, remote=True)


def test_the_cross_process_tolerance_still_sees_real_differences(local, sae):
    """`same` absorbs float32 reordering (a few ulps) but not an edit, another position or a tiny offset."""
    ids = local.encode_prompt("hello remote world")
    clean = local.token_nll(ids)
    assert same(clean, clean * (1 + 2 * torch.finfo(torch.float32).eps))
    assert not same(clean, local.token_nll(ids, edits=Ablate(sae, [5])))
    assert not same(clean, clean.roll(1, dims=-1))
    assert not same(clean, clean + 1e-4 * clean.abs().max())
    assert not same(1.0, 1.0 + 1e-5) and same(1.0, 1.0 + 1e-7)
