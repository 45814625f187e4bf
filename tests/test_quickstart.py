"""`saekit quickstart` end to end on the real model at tiny budgets: every stage writes its output."""

import json

import pytest

from saekit.quickstart import run

pytestmark = pytest.mark.real_model


def test_quickstart_writes_sae_metrics_and_report(tmp_path, real_model, capsys):
    out = tmp_path / "qs"
    summary = run(out, tokens=8192, harvest_tokens=4096, n_latents=512, k=16, eval_tokens=256, report_tokens=1024)
    assert (out / "sae" / "cfg.json").exists() and (out / "sae" / "sae_weights.safetensors").exists()
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["l0"] == pytest.approx(16, abs=0.5) and metrics["fvu"] < 1
    html = (out / "features.html").read_text()
    assert "<html" in html.lower() and "http://" not in html.replace("http://www.w3.org", "")
    assert (out / "features").is_dir()
    assert summary["report"] == str(out / "features.html")
    printed = capsys.readouterr().out
    assert "ce_loss_recovered" in printed and "features.html" in printed
    # a rerun reuses the saved SAE instead of retraining
    run(out, tokens=8192, harvest_tokens=4096, n_latents=512, k=16, eval_tokens=256, report_tokens=1024)
    assert "loading the SAE already trained" in capsys.readouterr().out
