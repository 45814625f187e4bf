"""The SAEs shipped with saekit for Gemma 3 270M: present, loadable offline, small, each with its card and
statistics; `load_pretrained` routes to them and still reads folders."""

from __future__ import annotations

import json

import pytest
import torch

import saekit
from saekit import pretrained
from saekit.errors import ConfigError

MODEL = "gemma-3-270m"
RESID = ["resid_post.2", "resid_post.6", "resid_post.10", "resid_post.14"]


def test_shipped_sae_names():
    names = pretrained.available()[MODEL]
    assert set(RESID) <= set(names), "at least four residual layers spread over the 18"
    assert "transcoder.6" in names, "plus one MLP transcoder"


@pytest.mark.parametrize("name", [n for n in pretrained.available().get(MODEL, RESID)])
def test_each_shipped_sae_loads_with_card_and_stats(name):
    sae = saekit.load_pretrained(MODEL, name)
    assert sae.d_in == 640 and sae.W_dec.dtype == torch.float32
    assert sae.cfg.model_name == MODEL
    if name.startswith("transcoder"):
        assert (sae.cfg.hookpoint, sae.cfg.target_hookpoint) == ("mlp_in.6", "mlp_out.6")
    else:
        assert sae.cfg.hookpoint == name
    # decoder rows are unit norm (what Steer's units and the dashboards assume)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(sae.n_latents), atol=1e-2, rtol=0)
    card = pretrained.card(MODEL, name)
    for key in ("l0", "fvu", "dead_fraction", "training", "eval_text"):
        assert key in card, key
    assert card["l0"] == pytest.approx(sae.cfg.k, rel=0.05)
    assert 0 < card["fvu"] < 0.5, "a trained SAE explains most of the variance on held-out text"
    # a transcoder's card splices its prediction in for the MLP's output (CE-loss recovered against zeroing it)
    assert 0.5 < card["ce_loss_recovered"] <= 1.0 and card["kl_divergence"] > 0
    stats = pretrained.stats(MODEL, name)
    assert stats.n_features == sae.n_latents and stats.n_tokens >= 50_000
    folder = pretrained.folder(MODEL, name)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 40e6, f"{name} takes {size / 1e6:.1f} MB; the package must stay reasonable"
    stored = json.loads((folder / "cfg.json").read_text())
    assert stored["dtype"] in ("bfloat16", "torch.bfloat16"), "stored in bf16"


def test_unknown_names_say_what_is_shipped(tmp_path):
    with pytest.raises(ConfigError, match="resid_post.6"):
        pretrained.folder(MODEL, "resid_post.7")
    with pytest.raises(ConfigError, match="no SAEs are shipped for model 'gpt-5'"):
        pretrained.load("gpt-5", "resid_post.6")
    with pytest.raises(ConfigError, match="dtype must be"):
        pretrained.load(MODEL, "resid_post.6", dtype="float16")


def test_load_pretrained_still_reads_folders(tmp_path):
    sae = saekit.Sae(saekit.SaeConfig(d_in=8, n_latents=16, k=2, hookpoint="resid_post.1"))
    sae.save(tmp_path / "mine")
    back = saekit.load_pretrained(tmp_path / "mine")
    torch.testing.assert_close(back.W_dec, sae.W_dec)


def test_labels_on_shipped_stats_never_write_into_the_package():
    folder = pretrained.folder(MODEL, "resid_post.6") / "features"
    before = sorted(p.name for p in folder.iterdir())
    stats = pretrained.stats(MODEL, "resid_post.6")
    stats.set_label(3, "a label of mine")
    assert stats.labels[3] == "a label of mine"
    assert sorted(p.name for p in folder.iterdir()) == before, "the installed package must stay as shipped"
    assert 3 not in pretrained.stats(MODEL, "resid_post.6").labels
