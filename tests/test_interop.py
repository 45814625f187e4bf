"""SAELens, sparsify and dictionary_learning formats: folders written in each library's layout (built here,
offline) load into saekit SAEs that encode and reconstruct exactly as the library's own forward would
(written out below from each library's definition); export to SAELens round-trips; repo ids go
through huggingface_hub.snapshot_download."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from saekit import Sae, SaeConfig
from saekit.interop import (
    InteropError,
    export_saelens,
    from_transformerlens_hook,
    load_dictionary_learning,
    load_pretrained,
    load_saelens,
    load_sparsify,
    to_transformerlens_hook,
)

D, F, K = 16, 48, 4


def x_batch(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def rand(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def topk_act(pre: torch.Tensor, k: int) -> torch.Tensor:
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def trained_like(arch: str, **kw) -> Sae:
    """A saekit SAE with generic (non-initial) weights, including thresholds and biases."""
    extra = {"jumprelu": {"target_l0": K}, "matryoshka": {"matryoshka_prefixes": (12,)}}.get(arch, {})
    sae = Sae(SaeConfig(d_in=D, n_latents=F, k=K, architecture=arch, hookpoint="resid_post.3", model_name="toy", **extra, **kw))
    with torch.no_grad():
        for i, (name, t) in enumerate(sorted(sae.state_dict().items())):
            if name == "threshold":
                t.copy_(rand(*t.shape, seed=i).abs() * 0.5 + 0.3 if t.ndim else torch.tensor(0.7))
            elif name not in ("W_skip", *sae.saekit_state):
                t.add_(rand(*t.shape, seed=i, scale=0.3))
    sae.eval()
    return sae


# -- SAELens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "gated", "batchtopk", "matryoshka"])
def test_export_to_saelens_and_back_encodes_the_same(arch, tmp_path):
    """export_saelens -> load_saelens gives the same latents and reconstructions (BatchTopK as JumpReLU)."""
    sae = trained_like(arch)
    folder = export_saelens(sae, tmp_path / arch)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert (folder / "sae_weights.safetensors").exists()
    assert cfg["architecture"] in ("standard", "topk", "jumprelu", "gated")
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    back = load_saelens(folder)
    assert back.cfg.hookpoint == "resid_post.3" and back.cfg.model_name == "toy"
    x = x_batch()
    assert (sae.encode(x) > 0).any()
    close(back.encode(x), sae.encode(x))
    close(back.reconstruct(x), sae.reconstruct(x))


def saelens_folder(tmp_path, cfg: dict, weights: dict) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": F, "dtype": "float32", **cfg}))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "sae_weights.safetensors"))
    return str(tmp_path)


def test_saelens_without_b_dec_on_the_input(tmp_path):
    """apply_b_dec_to_input=false (SAELens: encode x, not x - b_dec) is folded into b_enc exactly."""
    W_enc, b_enc, W_dec, b_dec = rand(D, F, seed=1), rand(F, seed=2), rand(F, D, seed=3), rand(D, seed=4)
    folder = saelens_folder(tmp_path, {"architecture": "standard", "apply_b_dec_to_input": False,
                                       "metadata": {"hook_name": "blocks.2.hook_mlp_out"}},
                            {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    sae = load_saelens(folder)
    x = x_batch()
    f = (x @ W_enc + b_enc).relu()  # SAELens StandardSAE.encode without the b_dec shift
    assert sae.architecture == "relu" and sae.cfg.hookpoint == "mlp_out.2"
    close(sae.encode(x), f)
    close(sae.reconstruct(x), f @ W_dec + b_dec)


def test_saelens_gated_without_b_dec_on_the_input(tmp_path):
    """Gated: both the gate and the magnitude biases absorb W b_dec."""
    W, b_gate, b_mag, r_mag = rand(D, F, seed=1), rand(F, seed=2), rand(F, seed=3), rand(F, seed=4, scale=0.2)
    W_dec, b_dec = rand(F, D, seed=5), rand(D, seed=6)
    folder = saelens_folder(tmp_path, {"architecture": "gated", "apply_b_dec_to_input": False},
                            {"W_enc": W, "b_gate": b_gate, "b_mag": b_mag, "r_mag": r_mag, "W_dec": W_dec, "b_dec": b_dec})
    sae = load_saelens(folder)
    x = x_batch()
    f = ((x @ W + b_gate) > 0) * (x @ (W * r_mag.exp()) + b_mag).relu()
    close(sae.encode(x), f)


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path):
    """rescale_acts_by_decoder_norm: top-k of pre * ||W_dec_i||, decoded with W_dec / ||W_dec_i||."""
    W_enc, b_enc, W_dec, b_dec = rand(D, F, seed=1), rand(F, seed=2), rand(F, D, seed=3), rand(D, seed=4)
    W_dec = W_dec * torch.linspace(0.5, 2.0, F)[:, None]
    folder = saelens_folder(tmp_path, {"architecture": "topk", "k": K, "rescale_acts_by_decoder_norm": True},
                            {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    sae = load_saelens(folder)
    x = x_batch()
    n = W_dec.norm(dim=-1)
    f = topk_act(((x - b_dec) @ W_enc + b_enc) * n, K)
    close(sae.encode(x), f)
    close(sae.reconstruct(x), (f / n) @ W_dec + b_dec)


def test_saelens_old_topk_and_log_threshold(tmp_path):
    """SAELens 5 TopK configs (activation_fn topk) and log_threshold JumpReLU weights load too."""
    W_enc, b_enc, W_dec, b_dec = rand(D, F, seed=1), rand(F, seed=2), rand(F, D, seed=3), rand(D, seed=4)
    topk = load_saelens(saelens_folder(tmp_path / "a", {"architecture": "standard", "activation_fn_str": "topk",
                                                        "activation_fn_kwargs": {"k": K}},
                                       {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}))
    assert topk.architecture == "topk" and topk.cfg.k == K
    log_t = rand(F, seed=5, scale=0.1)
    jr = load_saelens(saelens_folder(tmp_path / "b", {"architecture": "jumprelu"},
                                     {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "log_threshold": log_t}))
    pre = (x_batch() - b_dec) @ W_enc + b_enc
    close(jr.encode(x_batch()), pre.relu() * (pre > log_t.exp()))


def test_saelens_refusals_name_the_reason(tmp_path):
    """Run-time normalisation and SAELens's ReLU transcoders are refused with a reason."""
    w = {"W_enc": rand(D, F, seed=1), "b_enc": rand(F, seed=2), "W_dec": rand(F, D, seed=3), "b_dec": rand(D, seed=4)}
    with pytest.raises(InteropError, match="fold_activation_norm_scaling_factor"):
        load_saelens(saelens_folder(tmp_path / "a", {"architecture": "standard", "normalize_activations": "layer_norm"}, w))
    with pytest.raises(InteropError, match="no exact saekit equivalent"):
        load_saelens(saelens_folder(tmp_path / "b", {"architecture": "transcoder"}, w))
    tc = Sae(SaeConfig(d_in=D, n_latents=F, k=K, architecture="transcoder", target_hookpoint="mlp_out.1"))
    with pytest.raises(InteropError, match="sae.save"):
        export_saelens(tc, tmp_path / "c")
    with pytest.raises(InteropError, match="lacks"):
        load_saelens(tmp_path / "nothing-here")


# -- sparsify --------------------------------------------------------------------------------------


def sparsify_folder(root, name: str, cfg: dict, weights: dict):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 3, "normalize_decoder": True,
                                                 "num_latents": F, "multi_topk": False, "d_in": D, **cfg}))
    save_file(weights, str(folder / "sae.safetensors"))
    return folder


def test_sparsify_sae_and_skip_transcoder(tmp_path):
    """sparsify: TopK of ReLU(encoder(x - b_dec)); transcoders encode x and add x @ W_skip^T."""
    enc_w, enc_b, W_dec, b_dec, W_skip = rand(F, D, seed=1), rand(F, seed=2), rand(F, D, seed=3), rand(D, seed=4), rand(D, D, seed=5)
    sparsify_folder(tmp_path, "layers.3", {"k": K, "transcode": False, "skip_connection": False},
                    {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec})
    sparsify_folder(tmp_path, "layers.3.mlp", {"k": K, "transcode": True, "skip_connection": True},
                    {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec, "W_skip": W_skip})
    x = x_batch()
    sae = load_sparsify(tmp_path, "layers.3", hookpoint="resid_post.3")
    f = topk_act((x - b_dec) @ enc_w.t() + enc_b, K)
    assert sae.architecture == "topk" and sae.cfg.hookpoint == "resid_post.3"
    close(sae.encode(x), f)
    close(sae.reconstruct(x), f @ W_dec + b_dec)
    tc = load_sparsify(tmp_path, "layers.3.mlp", hookpoint="mlp_in.3", target_hookpoint="mlp_out.3")
    g = topk_act(x @ enc_w.t() + enc_b, K)
    assert tc.architecture == "skip_transcoder"
    close(tc.encode(x), g)
    close(tc.reconstruct(x), g @ W_dec + b_dec + x @ W_skip.t())


def test_saekit_folders_are_recognised(tmp_path):
    """load_pretrained tells saekit's own sae.safetensors folders from sparsify's."""
    sae = trained_like("topk")
    back = load_pretrained(sae.save(tmp_path / "ours"))
    assert torch.equal(back.encode(x_batch()), sae.encode(x_batch()))


# -- dictionary_learning ---------------------------------------------------------------------------


def dl_folder(root, dict_class: str, state: dict, **trainer):
    root.mkdir(parents=True, exist_ok=True)
    torch.save(state, root / "ae.pt")
    (root / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, "activation_dim": D,
                                                              "dict_size": F, "layer": 3, "lm_name": "toy", **trainer}}))
    return root


def test_dictionary_learning_formats(tmp_path):
    """Each dictionary_learning class loads with weights_only=True and encodes as its own forward does."""
    x = x_batch()
    enc_w, enc_b, dec_w, bias = rand(F, D, seed=1), rand(F, seed=2), rand(D, F, seed=3), rand(D, seed=4)
    dec_w = dec_w * torch.linspace(0.5, 2.0, F)[None, :]  # non-unit decoder norms exercise the rescaling folds

    relu = load_dictionary_learning(dl_folder(tmp_path / "std", "AutoEncoder",
                                              {"bias": bias, "encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w}))
    f = ((x - bias) @ enc_w.t() + enc_b).relu()
    assert relu.architecture == "relu" and relu.cfg.hookpoint == "resid_post.3" and relu.cfg.model_name == "toy"
    close(relu.encode(x), f)
    close(relu.reconstruct(x), f @ dec_w.t() + bias)

    btk = load_dictionary_learning(dl_folder(tmp_path / "btk", "BatchTopKSAE",
                                             {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w,
                                              "b_dec": bias, "k": torch.tensor(K), "threshold": torch.tensor(0.9)}))
    post = ((x - bias) @ enc_w.t() + enc_b).relu()
    assert btk.architecture == "batchtopk" and btk.cfg.k == K
    close(btk.encode(x), post * (post > 0.9))

    W_enc, b_enc, W_dec, b_dec = rand(D, F, seed=5), rand(F, seed=6), rand(F, D, seed=7) * 1.7, rand(D, seed=8)
    theta = rand(F, seed=9).abs()
    jr = load_dictionary_learning(dl_folder(tmp_path / "jr", "JumpReluAutoEncoder",
                                            {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": theta}))
    pre = x @ W_enc + b_enc
    f = (pre * (pre > theta)).relu() * W_dec.norm(dim=1)  # JumpReluAutoEncoder.encode
    close(jr.encode(x), f)
    close(jr.reconstruct(x), (f / W_dec.norm(dim=1)) @ W_dec + b_dec)

    r_mag, gb, mb = rand(F, seed=10, scale=0.2), rand(F, seed=11), rand(F, seed=12)
    gated = load_dictionary_learning(dl_folder(tmp_path / "gated", "GatedAutoEncoder",
                                               {"decoder_bias": bias, "encoder.weight": enc_w, "r_mag": r_mag, "gate_bias": gb,
                                                "mag_bias": mb, "decoder.weight": dec_w}))
    x_enc = (x - bias) @ enc_w.t()
    n = dec_w.norm(dim=0)
    f = ((x_enc + gb) > 0) * (r_mag.exp() * x_enc + mb).relu() * n  # GatedAutoEncoder.encode
    close(gated.encode(x), f)
    close(gated.reconstruct(x), (f / n) @ dec_w.t() + bias)

    mat = load_dictionary_learning(dl_folder(tmp_path / "mat", "MatryoshkaBatchTopKSAE",
                                             {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "k": torch.tensor(K),
                                              "threshold": torch.tensor(0.5), "group_sizes": torch.tensor([8, 16, F - 24])}))
    assert mat.cfg.matryoshka_prefixes == (8, 24)
    post = ((x - b_dec) @ W_enc + b_enc).relu()
    close(mat.encode(x), post * (post > 0.5))

    with pytest.raises(InteropError, match="not supported"):
        load_dictionary_learning(dl_folder(tmp_path / "x", "CrossCoder", {"W": torch.zeros(1)}))


def test_pickled_code_is_never_executed(tmp_path):
    """ae.pt is read with weights_only=True: a file that pickles an object is refused, not run."""
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    folder = dl_folder(tmp_path / "evil", "AutoEncoder", {})
    torch.save({"bias": Evil()}, folder / "ae.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_dictionary_learning(folder)


# -- Hugging Face repos and names ------------------------------------------------------------------


def test_repo_ids_download_only_the_requested_subfolder(tmp_path, monkeypatch):
    """A repo id goes through huggingface_hub.snapshot_download with allow_patterns for the subfolder."""
    import huggingface_hub

    sae = trained_like("topk")
    export_saelens(sae, tmp_path / "snap" / "layer_3")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    back = load_saelens("someone/some-saes", "layer_3")
    assert calls == [("someone/some-saes", ["layer_3/*"])]
    close(back.encode(x_batch()), sae.encode(x_batch()))


def test_transformerlens_hook_names_map_both_ways():
    """SAELens hook names and saekit's stable names translate into each other."""
    for ours in ("resid_post.6", "resid_pre.0", "mlp_out.11", "attn_out.2", "embed"):
        assert from_transformerlens_hook(to_transformerlens_hook(ours)) == ours
    assert from_transformerlens_hook("blocks.4.ln2.hook_normalized") == "mlp_in.4"
