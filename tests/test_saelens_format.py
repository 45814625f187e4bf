"""The saved SAE folder is SAELens 6's layout: every field and tensor SAELens's classes read, checked against
the field lists of sae-lens 6.54.12 (tests/saelens_fields.json, generated from its registry and classes), and
loaded by SAELens itself when an environment with it is named in $SAEKIT_SAELENS_PYTHON (never a saekit
dependency: it pulls in transformer-lens). Older saekit folders (sae.safetensors) still load."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_saes_family import ARCHS, is_transcoder, make_cfg, trained

from saekit import ConfigError, Sae, SaeConfig, load_pretrained
from saekit.saes import disk

FIELDS = json.loads((Path(__file__).parent / "saelens_fields.json").read_text())
SAELENS_PYTHON = os.environ.get("SAEKIT_SAELENS_PYTHON")
MAPPED = [a for a in ARCHS if Sae.class_for(a).saelens_architecture is not None]


def saved(arch: str, folder: Path) -> Sae:
    sae = trained(arch)
    if not is_transcoder(sae):
        sae.cfg = SaeConfig.from_dict({**sae.cfg.to_dict(), "hookpoint": "resid_post.1", "model_name": "tiny"})
    with torch.no_grad():  # every parameter non-trivial, so a mix-up of names or layouts shows
        sae.b_dec.normal_()
        if arch == "gated":
            sae.r_mag.normal_(0, 0.3)
            sae.b_mag.normal_()
    sae.save(folder)
    return sae


def test_the_field_lists_are_the_version_this_layout_names():
    assert FIELDS["sae_lens_version"] == disk.SAELENS_VERSION


@pytest.mark.parametrize("arch", MAPPED)
def test_cfg_and_tensors_are_exactly_what_saelens_reads(arch, tmp_path):
    sae = saved(arch, tmp_path / arch)
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    theirs = FIELDS["classes"][cfg["architecture"]]
    assert cfg["architecture"] == sae.saelens_architecture and cfg["architecture"] in FIELDS["architectures"]
    missing = [f for f in theirs["fields"] if f not in cfg]
    assert not missing, f"cfg.json lacks SAELens fields {missing} (their defaults would be used instead)"
    assert cfg["d_in"] == sae.d_in and cfg["d_sae"] == sae.n_latents and cfg["dtype"] == sae.cfg.dtype
    if cfg["architecture"] == "topk":
        assert cfg["k"] == sae.cfg.k and cfg["rescale_acts_by_decoder_norm"] is False
    meta = cfg["metadata"]
    assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["model_name"] == "tiny"
    assert meta["sae_lens_version"] == disk.SAELENS_VERSION
    assert SaeConfig.from_dict(cfg["saekit"]) == sae.cfg
    tensors = load_file(str(tmp_path / arch / disk.WEIGHTS_FILE))
    dims = {"d_in": sae.d_in, "d_sae": sae.n_latents}
    assert {k: list(v.shape) for k, v in tensors.items()} == {
        k: [dims[d] for d in shape] for k, shape in theirs["tensors"].items()
    }
    assert not (tmp_path / arch / disk.LEGACY_WEIGHTS_FILE).exists()


@pytest.mark.parametrize("arch", MAPPED)
def test_the_saelens_formula_on_the_saved_tensors_gives_saekits_encoding(arch, tmp_path):
    """SAELens 6's encoders, written out from its documented formulas, applied to the files."""
    sae = saved(arch, tmp_path / arch)
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    t = load_file(str(tmp_path / arch / disk.WEIGHTS_FILE))
    x = torch.randn(40, sae.d_in) * 3
    x_in = x - t["b_dec"]
    if cfg["architecture"] == "gated":
        pre = x_in @ t["W_enc"]
        gate = (pre + t["b_gate"]) > 0
        latents = gate * (pre * t["r_mag"].exp() + t["b_mag"]).relu()
    else:
        pre = x_in @ t["W_enc"] + t["b_enc"]
        if cfg["architecture"] == "topk":
            v, i = pre.topk(cfg["k"], dim=-1)
            latents = torch.zeros_like(pre).scatter(-1, i, v.relu())
        elif cfg["architecture"] == "jumprelu":
            latents = pre * (pre > t["threshold"])
        else:
            latents = pre.relu()
    torch.testing.assert_close(latents, sae.encode(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(latents @ t["W_dec"] + t["b_dec"], sae.reconstruct(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_then_load_is_lossless_for_every_architecture(arch, dtype, tmp_path):
    sae = trained(arch).to(getattr(torch, dtype))
    sae.cfg = SaeConfig.from_dict({**sae.cfg.to_dict(), "dtype": dtype})
    if arch in ("batchtopk", "matryoshka"):
        with torch.no_grad():
            sae.threshold.fill_(0.123456789)  # not representable in bf16: kept exactly in saekit_state
    sae.save(tmp_path / "s")
    back = Sae.load(tmp_path / "s")
    assert type(back) is type(sae) and back.cfg == sae.cfg
    for k, v in sae.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    # saekit_state holds what SAELens's file cannot: a bf16-unrepresentable threshold, a controller's coefficient
    needs_state = (arch in ("batchtopk", "matryoshka") and dtype == "bfloat16") or bool(sae.saekit_state)
    assert (tmp_path / "s" / disk.STATE_FILE).exists() == needs_state
    assert type(load_pretrained(tmp_path / "s")) is type(sae)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_topk_transcoders_name_an_architecture_saelens_refuses(arch, tmp_path):
    saved(arch, tmp_path / arch)
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert cfg["architecture"] not in FIELDS["architectures"]  # never read as SAELens's ReLU transcoder
    assert cfg["apply_b_dec_to_input"] is False


def _legacy_folder(sae: Sae, folder: Path) -> None:
    """What saekit wrote before this layout: sae.safetensors with saekit's names (W_enc [D, F], gated b_gate)."""
    folder.mkdir(parents=True)
    sd = {k: v.detach().contiguous() for k, v in sae.state_dict().items()}
    sd["W_enc"] = sae.W_enc.detach().t().contiguous()
    if "r_mag" in sd:
        sd["b_gate"] = sd.pop("b_enc")
    save_file(sd, str(folder / disk.LEGACY_WEIGHTS_FILE))
    (folder / "cfg.json").write_text(json.dumps({"architecture": sae.architecture, "saekit": sae.cfg.to_dict()}))


@pytest.mark.parametrize("arch", ARCHS)
def test_folders_of_the_older_layout_still_load(arch, tmp_path):
    sae = trained(arch)
    _legacy_folder(sae, tmp_path / "old")
    back = Sae.load(tmp_path / "old")
    x = torch.randn(10, sae.d_in)
    assert torch.equal(back.encode(x), sae.encode(x))
    back.save(tmp_path / "old")  # saving over it leaves the new layout only
    assert not (tmp_path / "old" / disk.LEGACY_WEIGHTS_FILE).exists() and (tmp_path / "old" / disk.WEIGHTS_FILE).exists()
    assert torch.equal(Sae.load(tmp_path / "old").encode(x), sae.encode(x))


def test_damaged_folders_raise_config_errors_naming_the_file(tmp_path):
    sae = saved("topk", tmp_path / "s")
    cfg_file, weights = tmp_path / "s" / "cfg.json", tmp_path / "s" / disk.WEIGHTS_FILE
    good_cfg, good_weights = cfg_file.read_text(), weights.read_bytes()
    cases = [
        (lambda: cfg_file.write_text(good_cfg[: len(good_cfg) // 2]), "cfg.json is not valid JSON"),
        (lambda: cfg_file.write_text("[1, 2]"), "cfg.json holds a list"),
        (lambda: cfg_file.write_text(json.dumps({"saekit": {"n_latents": 64}})), "cfg.json.*d_in"),
        (lambda: cfg_file.write_text(json.dumps({"saekit": {**sae.cfg.to_dict(), "k": -3}})), "cfg.json.*k"),
        (lambda: cfg_file.write_text(json.dumps({"architecture": "topk", "d_in": 16})), "no 'saekit' block"),
        (lambda: weights.write_bytes(good_weights[:50]), "sae_weights.safetensors is unreadable"),
        (lambda: weights.write_bytes(b"\x00" * 8 + b"{not json"), "sae_weights.safetensors is unreadable"),
        (lambda: save_file({"W_enc": torch.zeros(3, 3)}, str(weights)), "do not match cfg.json"),
    ]
    for damage, message in cases:
        cfg_file.write_text(good_cfg)
        weights.write_bytes(good_weights)
        damage()
        with pytest.raises(ConfigError, match=message):
            Sae.load(tmp_path / "s")
    with pytest.raises(ConfigError, match="not a saekit SAE folder"):
        Sae.load(tmp_path / "nothing")


@pytest.mark.saelens
@pytest.mark.skipif(not SAELENS_PYTHON, reason="set SAEKIT_SAELENS_PYTHON to the python of an environment with sae-lens")
def test_saelens_itself_loads_every_folder_and_encodes_like_saekit(tmp_path):
    x = torch.randn(64, 16) * 3
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    saes = {arch: saved(arch, tmp_path / arch) for arch in ARCHS}
    folders = [str(tmp_path / arch) for arch in ARCHS]
    r = subprocess.run(
        [SAELENS_PYTHON, str(Path(__file__).parent / "saelens_load.py"), str(tmp_path / "x.safetensors"),
         str(tmp_path / "out.json"), *folders],
        capture_output=True, text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["sae_lens_version"].startswith("6.")
    got = load_file(str(tmp_path / "out.json") + ".safetensors")
    for arch, folder in zip(ARCHS, folders):
        entry = report["folders"][folder]
        sae = saes[arch]
        if is_transcoder(sae):
            assert "error" in entry, f"SAELens loaded a TopK {arch} as {entry}"
            continue
        assert "error" not in entry, entry
        assert entry["hook_name"] == "blocks.1.hook_resid_post"
        i = entry["index"]
        torch.testing.assert_close(got[f"latents_{i}"], sae.encode(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[f"x_hat_{i}"], sae.reconstruct(x), rtol=1e-4, atol=1e-4)


def test_a_config_without_d_in_is_named(tmp_path):
    saved("relu", tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    del cfg["saekit"]["d_in"]
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="d_in"):
        Sae.load(tmp_path / "s")
