"""Circuit attribution on remote models: `attribute`, `faithfulness` and `ablate` with remote='local' (nnsight's
in-process serialisation) and on the loopback NDIF server (tests/ndif_loopback.py, which runs jobs as NDIF
does: frozen parameters, no inference mode) equal the local model's, for attribution patching and
integrated gradients, a residual SAE pair and a transcoder, edges included. Equal means `same` (float32
rounding, see tests/test_remote.py); remote='local' runs the same kernels in the same process.

A metric that is not saekit's `logit_diff` / `target_logprob` cannot travel: a CircuitError names the fix
before any request."""

from __future__ import annotations

import warnings

import pytest
import torch
from ndif_loopback import start_server, stats, stop_server
from test_remote import KEY, same
from tiny import byte_tokenizer, tiny_hf_model

import saekit
from saekit import Sae, SaeConfig
from saekit.circuits import ablate, attribute, faithfulness, logit_diff, target_logprob
from saekit.errors import CircuitError

PAIRS = [("hello world", "hallo world"), ("hello wxrld", "hallo wxrld")]
TEXTS = [a for a, _ in PAIRS]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gemma3-circuits")
    tiny_hf_model("gemma3").save_pretrained(str(path))
    byte_tokenizer().save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def local(folder):
    return saekit.load_model(folder)


@pytest.fixture(scope="module")
def simulated(folder):
    return saekit.load_model(folder, remote="local")


@pytest.fixture(scope="module")
def server(folder):
    proc, url = start_server(folder, api_key=KEY)
    yield url
    stop_server(proc)


@pytest.fixture()
def loopback(folder, server, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", KEY)
    return saekit.load_model(folder, remote=server)


def residual_pair():
    out = {h: Sae(SaeConfig(d_in=32, n_latents=48, k=8, architecture="relu", hookpoint=h), seed=i + 1)
           for i, h in enumerate(["resid_post.0", "resid_post.1"])}
    for s in out.values():
        with torch.no_grad():
            s.b_enc.fill_(0.05)  # many latents fire
    return out


def with_transcoder():
    tc = Sae(SaeConfig(d_in=32, n_latents=48, k=8, architecture="transcoder", hookpoint="mlp_in.1",
                       target_hookpoint="mlp_out.1"), seed=7)
    with torch.no_grad():
        tc.b_enc.fill_(0.05)
    return {"resid_post.0": residual_pair()["resid_post.0"], "mlp_out.1": tc, "resid_post.2": Sae(
        SaeConfig(d_in=32, n_latents=48, k=8, architecture="relu", hookpoint="resid_post.2"), seed=3)}


def same_circuit(a, b) -> bool:
    """Scores, metrics and edges (same nodes in the same order, weights to float32 rounding)."""
    if a.hookpoints != b.hookpoints or not all(same(a.scores[h], b.scores[h]) for h in a.hookpoints):
        return False
    if not (same(a.metric_clean, b.metric_clean) and same(a.metric_patch, b.metric_patch)):
        return False
    if [(e.up, e.down) for e in a.edges] != [(e.up, e.down) for e in b.edges]:
        return False
    wa, wb = torch.tensor([e.weight for e in a.edges]), torch.tensor([e.weight for e in b.edges])
    return same(wa, wb)


def attributions(model, saes, method, **kw):
    metric = logit_diff(model, "a", "b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no node reaches 1e9: "the circuit is empty"
        c0 = attribute(model, saes, PAIRS, metric, method=method, steps=4, edges=False, node_threshold=1e9, progress=False)
    top = max(float(s.abs().max()) for s in c0.scores.values())
    return attribute(model, saes, PAIRS, metric, method=method, steps=4, node_threshold=top / 30, edge_threshold=0.0,
                     progress=False, **kw)


@pytest.mark.parametrize("method", ["atp", "ig"])
@pytest.mark.parametrize("saes", [residual_pair, with_transcoder], ids=["residual", "transcoder"])
def test_simulated_remote_attribution_equals_local(local, simulated, method, saes):
    s = saes()
    want = attributions(local, s, method)
    got = attributions(simulated, s, method)
    assert len(want.edges) > 20 and len({e.down.hookpoint for e in want.edges}) == len(s) - 1
    assert same_circuit(want, got)


def test_simulated_remote_attributes_after_an_inference_mode_capture(folder, local):
    """remote='local' loads its weights at the first trace; when that trace is an ordinary (inference-mode) capture,
    the buffers it creates (Gemma's embedding scale, rotary tables) must still be usable by a later gradient run
    (notebook 06 captures first, then attributes)."""
    fresh = saekit.load_model(folder, remote="local")
    fresh.capture(fresh.encode_prompt("hello remote world"), ["resid_post.1"])
    s = residual_pair()
    assert same_circuit(attributions(local, s, "atp"), attributions(fresh, s, "atp"))


def test_simulated_remote_baselines_summed_positions_and_faithfulness(local, simulated):
    s = with_transcoder()
    for baseline in ("zero", "mean"):
        kw = dict(baseline=baseline, method="ig", steps=3, sum_positions=True, node_threshold=0.0, edge_threshold=0.0,
                  edge_batch=7, progress=False)
        want = attribute(local, s, TEXTS, target_logprob(local, "a"), **kw)
        got = attribute(simulated, s, TEXTS, target_logprob(simulated, "a"), **kw)
        assert want.edges and same_circuit(want, got), baseline
    c = attributions(local, s, "atp")
    top = max(float(v.abs().max()) for v in c.scores.values())
    kw = dict(thresholds=[0.0, top / 10, top * 2], progress=False)
    want = faithfulness(local, s, PAIRS, logit_diff(local, "a", "b"), c, **kw)
    got = faithfulness(simulated, s, PAIRS, logit_diff(simulated, "a", "b"), c, **kw)
    assert same(want, got) and want.n_nodes[0] > want.n_nodes[1] > 0
    feats = {"mlp_out.1": [f for _, f, _ in c.top_features(3, hookpoint="mlp_out.1")]}
    r1 = ablate(local, s, TEXTS, logit_diff(local, "a", "b"), feats, how="mean")
    r2 = ablate(simulated, s, TEXTS, logit_diff(simulated, "a", "b"), feats, how="mean")
    assert same(r1, r2) and abs(r1.change) > 0


def test_loopback_server_attribution_equals_local(local, loopback, server):
    before = stats(server)["requests"]
    s = with_transcoder()
    for method in ("atp", "ig"):
        assert same_circuit(attributions(local, s, method), attributions(loopback, s, method)), method
    # each attribute call: node values (2 with counterfactuals), metrics (1), gradients (1), edges (1);
    # attributions() calls attribute twice, the first time without edges
    assert stats(server)["requests"] - before == 2 * (4 + 5)
    c = attributions(local, residual_pair(), "atp")
    top = max(float(v.abs().max()) for v in c.scores.values())
    kw = dict(thresholds=[0.0, top / 10, top * 2], progress=False)
    want = faithfulness(local, residual_pair(), PAIRS, logit_diff(local, "a", "b"), c, **kw)
    got = faithfulness(loopback, residual_pair(), PAIRS, logit_diff(loopback, "a", "b"), c, **kw)
    assert same(want, got)


def test_a_metric_that_cannot_travel_fails_before_any_request(local, loopback, server):
    s = residual_pair()
    before = stats(server)["requests"]
    with pytest.raises(CircuitError, match="logit_diff.*target_logprob.*locally"):
        attribute(loopback, s, PAIRS, lambda logits: logits[:, -1, 0] - logits[:, -1, 1], progress=False)
    c = attribute(local, s, PAIRS, logit_diff(local, "a", "b"), method="atp", edges=False, node_threshold=0.0, progress=False)
    with pytest.raises(CircuitError, match="logit_diff"):
        faithfulness(loopback, s, PAIRS, lambda logits: logits[:, -1, 0], c, progress=False)
    with pytest.raises(CircuitError, match="logit_diff"):
        ablate(loopback, s, TEXTS, lambda logits: logits[:, -1, 0], {"resid_post.0": [1]})
    with pytest.raises(CircuitError, match="3 tokens but the batch has 2"):
        attribute(loopback, s, PAIRS, logit_diff(loopback, ["a", "b", "c"], "b"), progress=False)
    assert stats(server)["requests"] == before
    # the same lambda works on the local model
    lam = attribute(local, s, PAIRS, lambda logits: logits[:, -1, 97] - logits[:, -1, 98], method="atp", edges=False, progress=False)
    assert all(torch.isfinite(v).all() for v in lam.scores.values())


def test_a_server_without_gradients_answers_with_a_clear_error(folder, monkeypatch):
    """A server that runs traces in inference mode cannot attribute: the trace says so, as a RemoteError."""
    from saekit.errors import RemoteError

    proc, url = start_server(folder, api_key=KEY, inference_mode=True)
    try:
        monkeypatch.setenv("NDIF_API_KEY", KEY)
        model = saekit.load_model(folder, remote=url)
        with pytest.raises(RemoteError, match="without autograd.*local model"):
            attribute(model, residual_pair(), PAIRS, logit_diff(model, "a", "b"), method="atp", progress=False)
    finally:
        stop_server(proc)
