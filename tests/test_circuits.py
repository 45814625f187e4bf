"""Feature circuits on tiny random models: IG completeness, attribution patching in its linear regime and
exact on a model made linear, edges against finite differences and the chain rule, faithfulness ends,
the Circuit's plain data, and bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

import saekit
from saekit import Sae, SaeConfig
from saekit.circuits import ERROR, Node, attribute, faithfulness, logit_diff
from saekit.circuits.attribute import atp_grads, node_values
from saekit.circuits.inputs import checked_prompts, checked_saes
from saekit.circuits.splice import hook_edits, nodes_edit, replace_edit
from saekit.errors import CircuitError
from tiny import tiny_model

PAIRS = [("hello world", "hallo world"), ("abcdefghijk", "abcdefgxijk")]
HPS = ["resid_post.0", "resid_post.1"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", n_layers=3, d=32)


def make_saes(hps=HPS, n_latents=48, arch="relu"):
    return {h: Sae(SaeConfig(d_in=32, n_latents=n_latents, k=8, architecture=arch, hookpoint=h), seed=i + 1) for i, h in enumerate(hps)}


@pytest.fixture(scope="module")
def saes():
    torch.manual_seed(0)
    out = make_saes()
    for s in out.values():  # a bias so that many latents fire on the tiny model's activations
        with torch.no_grad():
            s.b_enc.fill_(0.05)
    return out


def metric_for(model):
    return logit_diff(model, "a", "b")


def patched_metric(model, work, ids, metric, h, values):
    return metric(model.grad_logits(ids, hook_edits(work, {h: replace_edit(work[h], *values)}), grad=False))


def test_ig_completeness_per_layer(model, saes):
    """IG (24 midpoint steps): a layer's node scores (features + error) sum to the effect of patching that layer."""
    metric = metric_for(model)
    c = attribute(model, saes, PAIRS, metric, method="ig", steps=24, node_threshold=1e9, edges=False, progress=False)
    work = checked_saes(model, saes)
    p = checked_prompts(model, PAIRS)
    clean, patch = node_values(model, work, p.clean), node_values(model, work, p.patch)
    m_clean = metric(model.grad_logits(p.clean, {}, grad=False))
    for h in HPS:
        effect = float((patched_metric(model, work, p.clean, metric, h, patch[h]) - m_clean).mean())
        total = float(c.scores[h].sum())
        assert abs(effect) > 1e-3, "the patch must move the metric for the test to mean anything"
        assert total == pytest.approx(effect, rel=2e-3), h  # measured 2e-4 at 24 steps; one step misses by 6-28%
    # attribution patching is only first order: it differs from the effect on a nonlinear model
    atp = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=1e9, edges=False, progress=False)
    assert any(abs(float(atp.scores[h].sum()) - float(c.scores[h].sum())) > 1e-4 for h in HPS)


def test_atp_matches_single_node_patch_in_linear_regime(model, saes):
    metric = metric_for(model)
    work = checked_saes(model, saes)
    p = checked_prompts(model, PAIRS)
    grads = atp_grads(model, work, p.clean, metric)
    h = HPS[0]
    g_f = grads[h][0]
    b, t, i = (g_f.abs() == g_f.abs().max()).nonzero()[0].tolist()
    m0 = metric(model.grad_logits(p.clean, {}, grad=False))[b].item()
    errs = []
    row_norm = float(work[h].W_dec[i].norm())
    for step in (0.02, 0.005):  # the patch's size in the residual stream: step / ||W_dec_i|| on the latent
        eps = step / row_norm
        delta = torch.zeros_like(g_f)
        delta[b, t, i] = eps
        m1 = metric(model.grad_logits(p.clean, hook_edits(work, {h: nodes_edit(work[h], {}, delta_f=delta)}), grad=False))[b].item()
        predicted = float(g_f[b, t, i]) * eps
        errs.append(abs((m1 - m0) - predicted) / abs(predicted))
    assert errs[1] < 0.02
    assert errs[1] < errs[0]  # the first-order estimate improves as the patch shrinks


def test_atp_exact_on_linearised_model(saes):
    """With the final norm removed, logits are linear in the last hook point: attribution patching there
    equals the actual effect of patching, for every node and for the whole layer."""
    m = tiny_model("llama", n_layers=2, d=32)
    m.hf_model.model.norm = torch.nn.Identity()
    hps = ["resid_post.0", "resid_post.1"]
    s = make_saes(hps)
    metric = metric_for(m)
    c = attribute(m, s, PAIRS, metric, method="atp", node_threshold=1e9, edges=False, progress=False)
    work = checked_saes(m, s)
    p = checked_prompts(m, PAIRS)
    clean, patch = node_values(m, work, p.clean), node_values(m, work, p.patch)
    m_clean = metric(m.grad_logits(p.clean, {}, grad=False))
    h = "resid_post.1"
    effect = float((patched_metric(m, work, p.clean, metric, h, patch[h]) - m_clean).mean())
    assert float(c.scores[h].sum()) == pytest.approx(effect, rel=1e-4, abs=1e-5)
    # one node (the error node at the last position) patched alone: exact too
    T = p.clean.shape[1]
    f_c, e_c = clean[h]
    e_one = e_c.clone()
    e_one[:, T - 1] = patch[h][1][:, T - 1]
    one = float((patched_metric(m, work, p.clean, metric, h, (f_c, e_one)) - m_clean).mean())
    assert float(c.scores[h][T - 1, -1]) == pytest.approx(one, rel=1e-4, abs=1e-5)


def test_edges_chain_rule_and_finite_difference():
    """Edges into every downstream node sum to the upstream node's AtP score (all of U's effect passes
    through D), and one edge matches the finite difference of the downstream node's g . value (float64
    GPT-2, so that the finite difference is not float noise)."""
    model = tiny_model("gpt2", n_layers=3, d=32)  # no rotary embedding: its float32 tables would add noise
    model.hf_model.double()
    s = make_saes(n_latents=12)
    metric = metric_for(model)
    pairs = [("hello", "hallo")]
    c = attribute(model, s, pairs, metric, method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False)
    up, down = HPS
    into = {}
    for e in c.edges:
        into[e.up] = into.get(e.up, 0.0) + e.weight
    checked = 0
    for n, total in into.items():
        score = float(c.scores[up][n.position, n.index])
        if abs(score) > 1e-4:
            assert total == pytest.approx(score, rel=1e-3, abs=1e-6), n
            checked += 1
    assert checked >= 3
    # finite difference of one edge u -> d
    feat_edges = [e for e in c.edges if e.up.index != ERROR and e.down.index != ERROR]
    e = max(feat_edges, key=lambda e: abs(e.weight))
    assert finite_difference_edge(model, s, pairs, metric, e) == pytest.approx(e.weight, rel=1e-3)


def finite_difference_edge(model, saes, pairs, metric, e, eps=1e-5):
    """(d(g_d . d) / d u) . (u_p - u_c) for the feature edge e = u -> d, by a finite step along u_p - u_c
    (g_d: the attribution-patching gradient of the metric at d, mean over prompts)."""
    work = checked_saes(model, saes)
    p = checked_prompts(model, pairs)
    clean, patch = node_values(model, work, p.clean), node_values(model, work, p.patch)
    grads = atp_grads(model, work, p.clean, metric)
    up, down = e.up.hookpoint, e.down.hookpoint
    g_d = grads[down][0][:, e.down.position, e.down.index]
    du = patch[up][0] - clean[up][0]
    delta = torch.zeros_like(du)
    delta[:, e.up.position, e.up.index] = eps * du[:, e.up.position, e.up.index]
    st = {}
    model.grad_logits(p.clean, hook_edits(work, {up: nodes_edit(work[up], {}, delta_f=delta), down: nodes_edit(work[down], st)}), grad=False)
    d1 = st["f"][:, e.down.position, e.down.index]
    d0 = clean[down][0][:, e.down.position, e.down.index]
    return float((g_d * (d1 - d0)).mean()) / eps


def test_faithfulness_ends(model, saes):
    metric = metric_for(model)
    c = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=1e9, edges=False, progress=False)
    top = max(float(v.abs().max()) for v in c.scores.values())
    curve = faithfulness(model, saes, PAIRS, metric, c, thresholds=[0.0, top / 10, top * 2], progress=False)
    assert curve.faithfulness[0] == pytest.approx(1.0, abs=1e-3)   # every node kept
    assert curve.completeness[0] == pytest.approx(0.0, abs=1e-6)   # its complement is empty
    assert curve.faithfulness[-1] == pytest.approx(0.0, abs=1e-6)  # empty circuit
    assert curve.completeness[-1] == pytest.approx(1.0, abs=1e-3)
    assert curve.n_nodes[0] > curve.n_nodes[1] > curve.n_nodes[2] == 0
    ax = curve.plot()
    assert len(ax.lines) >= 2


def test_circuit_plain_data(model, saes):
    metric = metric_for(model)
    c0 = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=1e9, edges=False, progress=False)
    top = max(float(v.abs().max()) for v in c0.scores.values())
    c = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=top / 40, edge_threshold=0.0, progress=False)
    assert c.edges and all(abs(c.scores[e.up.hookpoint][e.up.position, e.up.index]) >= top / 40 for e in c.edges)
    small = c.prune(top / 20, 0.0)
    nodes = small.nodes()
    assert len(nodes) > 1 and all(abs(s) >= top / 20 for _, s in nodes)
    assert abs(nodes[0][1]) == pytest.approx(top)
    table = small.to_pandas()
    assert list(table.columns)[:4] == ["hookpoint", "position", "token", "feature"] and len(table) == len(nodes)
    g = small.to_networkx()
    assert g.number_of_nodes() == len(nodes)
    assert all(isinstance(n, Node) for n in g.nodes)
    assert g.number_of_edges() == len(small.kept_edges()) > 0
    summed = attribute(model, saes, PAIRS, metric, method="atp", sum_positions=True, node_threshold=0.0, edges=False, progress=False)
    # summing over positions is the sum of the per-position scores
    torch.testing.assert_close(summed.scores[HPS[0]], c.scores[HPS[0]].sum(0), rtol=1e-5, atol=1e-6)
    assert len(summed.top_features(5)) == 5


def test_zero_and_mean_baselines(model, saes):
    metric = metric_for(model)
    texts = [a for a, _ in PAIRS]
    for baseline in ("zero", "mean"):
        c = attribute(model, saes, texts, metric, baseline=baseline, method="ig", steps=4, node_threshold=1e9, edges=False, progress=False)
        assert c.baseline == baseline
        # position 0 (the separator) is never patched
        assert float(c.scores[HPS[0]][0].abs().sum()) == 0.0
    r = saekit.circuits.ablate(model, saes, texts, metric, {HPS[1]: [0, 1, 2]})
    assert r.metric_clean.shape == (2,) and r.metric_ablated.shape == (2,)


def test_bad_input(model, saes):
    metric = metric_for(model)
    with pytest.raises(CircuitError, match="not in this model"):
        attribute(model, {"resid_post.9": saes[HPS[0]]}, PAIRS, metric, progress=False)
    with pytest.raises(CircuitError, match="execution order"):
        attribute(model, {HPS[1]: saes[HPS[1]], HPS[0]: saes[HPS[0]]}, PAIRS, metric, progress=False)
    with pytest.raises(CircuitError, match="one scalar per prompt"):
        attribute(model, saes, PAIRS, lambda logits: logits[:, -1], progress=False)
    with pytest.raises(CircuitError, match="one scalar per prompt"):
        attribute(model, saes, PAIRS, lambda logits: logits.sum(), progress=False)
    with pytest.raises(CircuitError, match="same length"):
        attribute(model, saes, [("hello world", "hello worlds")], metric, progress=False)
    with pytest.raises(CircuitError, match="different lengths"):
        attribute(model, saes, ["hello", "hello world"], metric, progress=False)
    with pytest.raises(CircuitError, match="one token"):
        logit_diff(model, "ab", "b")
    with pytest.raises(CircuitError, match="method"):
        attribute(model, saes, PAIRS, metric, method="magic", progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=1e6, progress=False)
    assert any("circuit is empty" in str(x.message) for x in w)
    assert c.nodes() == [] and c.edges == []
    with pytest.warns(UserWarning, match="empty"):
        c.prune(1e7)


def test_remote_models_refuse_a_metric_that_cannot_travel(model, saes):
    """A remote model computes the metric on the server: a callable other than logit_diff / target_logprob is
    refused before any work (tests/test_remote_circuits.py runs attribution remotely)."""
    model.remote = "local"
    try:
        with pytest.raises(CircuitError, match="only plain data travels"):
            attribute(model, saes, PAIRS, lambda logits: logits[:, -1, 0], progress=False)
    finally:
        model.remote = False


# -- transcoders -------------------------------------------------------------------------------------


def make_transcoder(layer, n_latents=48, arch="transcoder", seed=7):
    tc = Sae(SaeConfig(d_in=32, n_latents=n_latents, k=8, architecture=arch, hookpoint=f"mlp_in.{layer}",
                       target_hookpoint=f"mlp_out.{layer}"), seed=seed)
    with torch.no_grad():
        tc.b_enc.fill_(0.05)  # many latents fire
        if arch == "skip_transcoder":
            tc.W_skip.normal_(0, 0.1)
    return tc


def captured(model, ids, hookpoint):
    """The activation at `hookpoint` of a plain forward (read by an identity edit, no splice)."""
    box = {}

    def keep(x):
        box["x"] = x.detach().clone()
        return x

    model.grad_logits(ids, {hookpoint: keep}, grad=False)
    return box["x"]


def loud_mlp_model(n_layers=3, scale=20.0):
    """The tiny llama with MLP outputs scaled up (at random init they barely move the logits)."""
    m = tiny_model("llama", n_layers=n_layers, d=32)
    with torch.no_grad():
        for layer in m.hf_model.model.layers:
            layer.mlp.down_proj.weight.mul_(scale)
    return m


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_ig_completeness_transcoder(saes, arch):
    """A transcoder's features and error node (IG, 24 steps) sum to the effect of patching that MLP's output
    with the counterfactual's, measured by a plain hook (no splice code)."""
    model = loud_mlp_model()
    metric = metric_for(model)
    mixed = {"resid_post.0": saes["resid_post.0"], "mlp_out.1": make_transcoder(1, arch=arch)}
    c = attribute(model, mixed, PAIRS, metric, method="ig", steps=24, node_threshold=1e9, edges=False, progress=False)
    p = checked_prompts(model, PAIRS)
    y_patch = captured(model, p.patch, "mlp_out.1")
    m_clean = metric(model.grad_logits(p.clean, {}, grad=False))
    m_patched = metric(model.grad_logits(p.clean, {"mlp_out.1": lambda y: y_patch}, grad=False))
    effect = float((m_patched - m_clean).mean())
    assert abs(effect) > 1e-3
    assert float(c.scores["mlp_out.1"].sum()) == pytest.approx(effect, rel=2e-3)
    assert c.hookpoints == ["resid_post.0", "mlp_out.1"] and c.scores["mlp_out.1"].shape[-1] == 49
    # the features carry part of it (the splice is not all error node)
    assert float(c.scores["mlp_out.1"][:, :-1].abs().sum()) > 1e-3


def test_transcoder_splice_keeps_the_model():
    """With a transcoder spliced in, logits and their gradient with respect to the input embeddings equal the
    model's own (the error node carries what the transcoder misses)."""
    m = tiny_model("llama", n_layers=2, d=32)
    work = checked_saes(m, {"mlp_out.0": make_transcoder(0, arch="skip_transcoder")})
    p = checked_prompts(m, PAIRS)
    plain = m.grad_logits(p.clean, {}, grad=False)
    spliced = m.grad_logits(p.clean, hook_edits(work, {"mlp_out.0": nodes_edit(work["mlp_out.0"], {})}), grad=False)
    torch.testing.assert_close(spliced, plain, rtol=1e-5, atol=1e-5)


def test_atp_exact_on_model_linear_in_transcoder():
    """Final norm removed and the transcoder at the last MLP: logits are linear in its output, so attribution
    patching at the transcoder equals the effect of patching it, for the layer and for one feature."""
    m = loud_mlp_model(n_layers=2, scale=100.0)
    m.hf_model.model.norm = torch.nn.Identity()
    m.hf_model.double()
    tcs = {"mlp_out.1": make_transcoder(1)}
    metric = metric_for(m)
    c = attribute(m, tcs, PAIRS, metric, method="atp", node_threshold=1e9, edges=False, progress=False)
    work = checked_saes(m, tcs)
    p = checked_prompts(m, PAIRS)
    clean, patch = node_values(m, work, p.clean), node_values(m, work, p.patch)
    m_clean = metric(m.grad_logits(p.clean, {}, grad=False))
    effect = float((patched_metric(m, work, p.clean, metric, "mlp_out.1", patch["mlp_out.1"]) - m_clean).mean())
    assert abs(effect) > 1e-3
    assert float(c.scores["mlp_out.1"].sum()) == pytest.approx(effect, rel=1e-6)
    f_c, e_c = clean["mlp_out.1"]
    s_f = c.scores["mlp_out.1"][:, :-1]
    t, i = (s_f.abs() == s_f.abs().max()).nonzero()[0].tolist()
    f_one = f_c.clone()
    f_one[:, t, i] = patch["mlp_out.1"][0][:, t, i]
    one = float((patched_metric(m, work, p.clean, metric, "mlp_out.1", (f_one, e_c)) - m_clean).mean())
    assert abs(one) > 1e-6 and float(s_f[t, i]) == pytest.approx(one, rel=1e-6)


def test_edges_into_and_out_of_a_transcoder():
    """resid_post.0 (SAE) -> mlp_out.1 (transcoder) -> resid_post.2 (SAE) in one call (float64 GPT-2): edges
    into and out of the transcoder match finite differences; all of the transcoder's effect passes through
    resid_post.2, so its edges there sum to its attribution patching score."""
    model = tiny_model("gpt2", n_layers=3, d=32)
    model.hf_model.double()
    mixed = {"resid_post.0": make_saes(["resid_post.0"], n_latents=12)["resid_post.0"],
             "mlp_out.1": make_transcoder(1, n_latents=12),
             "resid_post.2": make_saes(["resid_post.2"], n_latents=12)["resid_post.2"]}
    metric = metric_for(model)
    pairs = [("hello", "hallo")]
    c = attribute(model, mixed, pairs, metric, method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False)
    assert c.hookpoints == ["resid_post.0", "mlp_out.1", "resid_post.2"]
    feat = [e for e in c.edges if e.up.index != ERROR and e.down.index != ERROR]
    into = [e for e in feat if e.down.hookpoint == "mlp_out.1"]
    out = [e for e in feat if e.up.hookpoint == "mlp_out.1"]
    assert into and out
    for e in (max(into, key=lambda e: abs(e.weight)), max(out, key=lambda e: abs(e.weight))):
        assert abs(e.weight) > 1e-6
        assert finite_difference_edge(model, mixed, pairs, metric, e) == pytest.approx(e.weight, rel=1e-3), e
    sums = {}
    for e in c.edges:
        if e.up.hookpoint == "mlp_out.1":
            sums[e.up] = sums.get(e.up, 0.0) + e.weight
    checked = 0
    for n, total in sums.items():
        score = float(c.scores["mlp_out.1"][n.position, n.index])
        if abs(score) > 1e-4:
            assert total == pytest.approx(score, rel=1e-3, abs=1e-6), n
            checked += 1
    assert checked >= 2


def test_transcoder_bad_input(model, saes):
    metric = metric_for(model)
    tc = make_transcoder(1)
    with pytest.raises(CircuitError, match="key it by 'mlp_out.1'"):
        attribute(model, {"mlp_in.1": tc}, PAIRS, metric, progress=False)
    with pytest.raises(CircuitError, match="key it by 'mlp_out.1'"):
        attribute(model, {"mlp_out.2": tc}, PAIRS, metric, progress=False)
    with pytest.raises(CircuitError, match="execution order"):
        attribute(model, {"mlp_out.1": tc, "resid_post.0": saes["resid_post.0"]}, PAIRS, metric, progress=False)
    sae_in = Sae(SaeConfig(d_in=32, n_latents=16, k=4, hookpoint="mlp_in.1"), seed=1)
    with pytest.raises(CircuitError, match="one splice"):
        attribute(model, {"mlp_in.1": sae_in, "mlp_out.1": tc}, PAIRS, metric, progress=False)
    with pytest.raises(CircuitError, match="not in this model"):
        attribute(model, {"mlp_out.7": make_transcoder(7)}, PAIRS, metric, progress=False)


@pytest.mark.parametrize("sum_positions", [False, True])
def test_batched_edges_equal_one_backward_per_node(model, saes, sum_positions):
    """Edges from batched backwards (chunks of 3 downstream nodes, and the default chunk) equal those of one
    backward per downstream node, edge for edge."""
    metric = metric_for(model)
    c0 = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=1e9, sum_positions=sum_positions, progress=False)
    top_feature = max(float(v[..., :-1].abs().max()) for v in c0.scores.values())  # error nodes score far higher
    kw = dict(method="atp", node_threshold=top_feature / 8, edge_threshold=0.0, sum_positions=sum_positions, progress=False)
    one = attribute(model, saes, PAIRS, metric, edge_batch=1, **kw)
    assert len({e.down for e in one.edges if e.down.index != ERROR}) > 3 and len(one.edges) > 20
    for batch in (3, None):
        c = attribute(model, saes, PAIRS, metric, edge_batch=batch, **kw)
        assert [(e.up, e.down) for e in c.edges] == [(e.up, e.down) for e in one.edges]
        torch.testing.assert_close(torch.tensor([e.weight for e in c.edges]), torch.tensor([e.weight for e in one.edges]),
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(CircuitError, match="edge_batch"):
        attribute(model, saes, PAIRS, metric, edge_batch=0, **kw)


def test_faithfulness_and_ablate_with_a_transcoder(saes):
    """Faithfulness over a mixed circuit has its ends (all nodes kept: the model; none: 0), and ablating a
    transcoder's features through `ablate` moves the metric."""
    model = loud_mlp_model()
    mixed = {"resid_post.0": saes["resid_post.0"], "mlp_out.1": make_transcoder(1)}
    metric = metric_for(model)
    c = attribute(model, mixed, PAIRS, metric, method="atp", node_threshold=0.0, edges=False, progress=False)
    top = max(float(v.abs().max()) for v in c.scores.values())
    curve = faithfulness(model, mixed, PAIRS, metric, c, thresholds=[0.0, top / 10, top * 2], progress=False)
    assert curve.faithfulness[0] == pytest.approx(1.0, abs=1e-3) and curve.faithfulness[-1] == pytest.approx(0.0, abs=1e-6)
    assert curve.n_nodes[0] > curve.n_nodes[1] > 0
    feats = [f for _, f, _ in c.top_features(3, hookpoint="mlp_out.1")]
    r = saekit.circuits.ablate(model, mixed, [a for a, _ in PAIRS], metric, {"mlp_out.1": feats})
    assert abs(r.change) > 1e-4
