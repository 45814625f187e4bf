"""Stable hook-point names resolve structurally and capture the right tensors on every architecture."""

import pytest
import torch

from saekit.hookpoints import HookPointError
from tiny import ARCHS, tiny_hf_model, tiny_model


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


def _ids(n=2, t=12):
    return torch.randint(4, 260, (n, t), generator=torch.Generator().manual_seed(1))


def test_resid_matches_hidden_states(arch_model):
    """resid_pre.L / resid_post.L equal transformers' output_hidden_states at L / L+1."""
    _, model = arch_model
    ids = _ids()
    hs = model.hf_model(ids, output_hidden_states=True).hidden_states
    got = model.capture(ids, ["resid_pre.1", "resid_post.1"])
    torch.testing.assert_close(got["resid_pre.1"], hs[1])
    torch.testing.assert_close(got["resid_post.1"], hs[2])


def test_block_decomposes_into_attn_and_mlp(arch_model):
    """resid_post = resid_pre + attn_out + mlp_out: the roles found by the probe are the contributions."""
    _, model = arch_model
    got = model.capture(_ids(), ["resid_pre.2", "attn_out.2", "mlp_out.2", "resid_post.2"])
    torch.testing.assert_close(got["resid_pre.2"] + got["attn_out.2"] + got["mlp_out.2"], got["resid_post.2"], atol=1e-5, rtol=1e-5)


def test_mlp_in_is_the_mlp_input(arch_model):
    """mlp_in.L is exactly what the MLP module receives (what a transcoder reads)."""
    _, model = arch_model
    hp = model.resolve("mlp_in.1")
    mlp = model.hf_model.get_submodule(hp.module_path)
    seen = {}
    h = mlp.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0].detach().clone()))
    ids = _ids()
    try:
        model.hf_model(ids)
    finally:
        h.remove()
    torch.testing.assert_close(model.capture(ids, ["mlp_in.1"])["mlp_in.1"], seen["x"])
    assert any(p.ndim == 2 for p in mlp.parameters()), "mlp_in must point at the MLP, not a norm"


def test_embed_is_the_embedding_output(arch_model):
    _, model = arch_model
    ids = _ids()
    emb = model.hf_model.get_input_embeddings()(ids)
    torch.testing.assert_close(model.capture(ids, ["embed"])["embed"], emb)


def test_capture_stops_after_deepest_hookpoint(arch_model):
    """Layers after the deepest requested hook point (and the LM head) never run."""
    _, model = arch_model
    last = model.hf_model.get_submodule(model.resolve("resid_post.2").module_path)
    calls = []
    h = last.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.capture(_ids(), ["resid_post.0", "mlp_out.1"])
    finally:
        h.remove()
    assert calls == []


def test_several_hookpoints_in_one_pass_equal_separate_captures(arch_model):
    _, model = arch_model
    ids = _ids()
    both = model.capture(ids, ["resid_post.1", "mlp_out.0"])  # out of order on purpose
    torch.testing.assert_close(both["resid_post.1"], model.capture(ids, ["resid_post.1"])["resid_post.1"])
    torch.testing.assert_close(both["mlp_out.0"], model.capture(ids, ["mlp_out.0"])["mlp_out.0"])


def test_names_are_the_same_across_architectures():
    names = {a: tiny_model(a, n_layers=2).hookpoints for a in ("gpt2", "gemma3")}
    assert names["gpt2"] == names["gemma3"]
    assert names["gpt2"][:2] == ["embed", "resid_pre.0"]


@pytest.mark.parametrize("bad", ["resid_post.3", "resid_post.-1", "resid_mid.1", "blocks.1.hook_resid_post", "resid_post"])
def test_bad_hookpoints_raise_listing_valid_names(bad):
    model = tiny_model("llama")
    with pytest.raises(HookPointError) as e:
        model.resolve(bad)
    msg = str(e.value)
    assert bad in msg and ("0..2" in msg)


def test_prebuilt_module_without_tokenizer_source_is_a_clear_error():
    import saekit
    from saekit.errors import ModelLoadError

    hf = tiny_hf_model("llama")
    hf.config._name_or_path = ""
    with pytest.raises(ModelLoadError, match="tokenizer="):
        saekit.load_model(hf)


def test_unknown_model_name_is_a_clear_error():
    import saekit
    from saekit.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="gemma-3-270m"):
        saekit.load_model("no-such-model")


@pytest.mark.parametrize("hookpoint", ["attn_out.1", "mlp_in.1", "resid_pre.1", "resid_post.1"])
def test_edits_on_tuple_outputs_and_inputs(hookpoint):
    """Editing works where the module returns a tuple (GPT-2 attention) and on module inputs."""
    model = tiny_model("gpt2")
    ids = _ids()
    clean = model.token_nll(ids)
    same = model.token_nll(ids, edits={hookpoint: lambda a: a.clone()})
    zeroed = model.token_nll(ids, edits={hookpoint: lambda a: torch.zeros_like(a)})
    torch.testing.assert_close(same, clean)
    assert not torch.allclose(zeroed, clean)
