"""saekit.sweep: power-law fitting recovers known exponents, the sweep trains a grid, reads budgets from one
run, writes its table, and a half-done sweep resumes to the same numbers without redoing finished runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import saekit.sweep.run as sweep_run
from saekit.config import ConfigError, SaeConfig, SweepConfig, TrainConfig
from saekit.errors import TrainingError
from saekit.store import ActivationCache
from saekit.sweep import bootstrap, fit_power_law, pareto, plot_fit, plot_frontier, run_sweep
from saekit.synthetic import SyntheticDictionary

TRUE = {"E": 0.05, "A": 3.0, "alpha": 0.4, "B": 40.0, "beta": 0.35}


def law_points(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    N = np.repeat([256, 512, 1024, 2048, 4096, 8192], 4).astype(float)
    D = np.tile([1e5, 3e5, 1e6, 3e6], 6)
    L = TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]
    return N, D, L * np.exp(rng.normal(0, noise, L.size))


def test_fit_recovers_exact_law():
    N, D, L = law_points(0.0)
    fit = fit_power_law(N, L, tokens=D)
    for k, v in TRUE.items():
        assert fit.params[k] == pytest.approx(v, rel=0.02), (k, fit.params)
    assert fit.rel_rmse < 1e-3


def test_bootstrap_intervals_cover_true_exponents_under_noise():
    """1% multiplicative noise: estimates land near the truth and the 95% intervals cover it in most draws
    (a percentile bootstrap on 24 points is not exact, so coverage is counted over eight noise draws)."""
    covered = {"alpha": 0, "beta": 0}
    for seed in range(8):
        N, D, L = law_points(0.01, seed)
        fit = bootstrap(fit_power_law(N, L, tokens=D), n=60, seed=seed)
        for k in covered:
            lo, hi = fit.ci[k]
            covered[k] += lo <= TRUE[k] <= hi
            assert hi - lo < 0.3, "an interval this wide would say nothing"
            assert abs(fit.params[k] - TRUE[k]) < 0.1, (k, fit.params)
    assert min(covered.values()) >= 6, covered


def test_one_dimensional_laws():
    N = np.array([128, 256, 512, 1024, 2048, 4096.0])
    fit = fit_power_law(N, 0.1 + 2.0 * N ** -0.5)
    assert fit.terms == ("N",)
    assert fit.params["alpha"] == pytest.approx(0.5, rel=0.01) and fit.params["E"] == pytest.approx(0.1, rel=0.02)
    D = np.geomspace(1e4, 1e7, 6)
    fit_d = fit_power_law(None, 0.2 + 30 * D ** -0.3, tokens=D)
    assert fit_d.params["beta"] == pytest.approx(0.3, rel=0.01)
    with pytest.raises(ConfigError, match="2-D law"):
        fit.optimal_width(1e6)


def test_optimal_width_balances_the_two_marginal_gains():
    N, D, L = law_points(0.0)
    fit = fit_power_law(N, L, tokens=D)
    for tokens in (1e5, 1e6, 1e7):
        n_opt = fit.optimal_width(tokens)
        p = fit.params
        gain_n = p["alpha"] * p["A"] * n_opt ** -p["alpha"]
        gain_d = p["beta"] * p["B"] * tokens ** -p["beta"]
        assert gain_n == pytest.approx(gain_d, rel=1e-6)
    assert fit.optimal_width(1e7) > fit.optimal_width(1e6), "more tokens justify a wider dictionary"
    n_c, d_c = fit.compute_optimal(1e10)
    assert n_c * d_c == pytest.approx(1e10)
    grid = np.geomspace(n_c / 30, n_c * 30, 401)
    assert abs(np.log(grid[np.argmin(fit.predict(grid, 1e10 / grid))] / n_c)) < 0.02, "N x D = C minimised there"


def test_fit_refuses_bad_input():
    with pytest.raises(ConfigError, match="at least"):
        fit_power_law([1, 2, 3], [1.0, 0.5, 0.3])
    with pytest.raises(ConfigError, match="one width"):
        fit_power_law([8, 8, 8, 8, 8], [1.0, 0.9, 0.8, 0.7, 0.6], tokens=None)
    with pytest.raises(ConfigError, match="positive"):
        fit_power_law([1, 2, 3, 4, 5], [1.0, 0.5, -0.3, 0.2, 0.1])


def test_pareto_frontier():
    l0 = np.array([1, 2, 3, 4.0])
    fvu = np.array([0.5, 0.6, 0.3, 0.1])
    assert pareto(l0, fvu).tolist() == [0, 2, 3]


# -- the sweep --------------------------------------------------------------------------------------

D_IN = 16


def synthetic_cache(n: int = 6144, seed: int = 0) -> ActivationCache:
    x = SyntheticDictionary(d=D_IN, n_features=128, mean_active=3.0).sample(n, seed=seed).float()
    return ActivationCache(["x"], {"x": D_IN}, tensors={"x": x}, shards=[{"rows": n}])


def sweep_args(tmp_path, name):
    cfg = SweepConfig(widths=(32, 64), ks=(4,), tokens=(1024, 2048, 4096), eval_tokens=1024, per_pass=1)
    tc = TrainConfig(batch_size=256, log_every=4)
    return dict(cfg=cfg, out=tmp_path / name, train_cfg=tc, progress=False)


def test_sweep_table_and_budgets(tmp_path):
    cache, held = synthetic_cache(), synthetic_cache(1024, seed=9).load("x")
    res = run_sweep(cache, held, **sweep_args(tmp_path, "a"))
    t = res.table
    assert len(t) == 2 * 3 and set(t.columns) >= {"name", "n_latents", "k", "tokens", "fvu", "l0", "dead_fraction"}
    assert (t.l0 <= 4 + 1e-6).all() and t.fvu.between(0, 1.5).all()
    for _, g in t.groupby("name"):
        assert g.sort_values("tokens").fvu.iloc[-1] < g.sort_values("tokens").fvu.iloc[0], "more tokens, lower FVU"
    last = t[t.tokens == 4096].set_index("n_latents")
    assert last.loc[64, "fvu"] < last.loc[32, "fvu"], "wider dictionary, lower FVU at the same L0"
    sae = res.sae(64, 4)
    assert sae.n_latents == 64
    # the saved SAE is in raw units: its measurement is the table's
    assert sweep_run.measure(sae, held)["fvu"] == pytest.approx(last.loc[64, "fvu"], rel=1e-5)


def test_sweep_resumes_after_a_crash(tmp_path, monkeypatch):
    cache, held = synthetic_cache(), synthetic_cache(1024, seed=9).load("x")
    ref = run_sweep(cache, held, **sweep_args(tmp_path, "ref")).table

    real = sweep_run.measure
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # pass 0's three budgets done, pass 1's first measured, crash at its second
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(sweep_run, "measure", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cache, held, **sweep_args(tmp_path, "b"))
    out = tmp_path / "b"
    assert len(list((out / "results").glob("*.json"))) == 4
    stamps = {f.name: f.stat().st_mtime_ns for f in (out / "results").glob("*.json")}
    monkeypatch.setattr(sweep_run, "measure", real)

    built = []
    orig_init = sweep_run.Trainer.__init__

    def spy(self, saes, *a, **k):
        built.append([s.n_latents for s in saes])
        orig_init(self, saes, *a, **k)

    resumed = []
    orig_resume = sweep_run.Trainer.resume.__func__

    def spy_resume(cls, path, *a, **k):
        resumed.append(path.parent.name)
        return orig_resume(cls, path, *a, **k)

    monkeypatch.setattr(sweep_run.Trainer, "__init__", spy)
    monkeypatch.setattr(sweep_run.Trainer, "resume", classmethod(spy_resume))
    again = run_sweep(cache, held, **sweep_args(tmp_path, "b")).table
    assert built == [[64]] and resumed == ["pass_1"], "the finished pass is skipped, the interrupted one resumed"
    for f in (out / "results").glob("*.json"):
        if f.name in stamps:
            assert f.stat().st_mtime_ns == stamps[f.name], f"{f.name} was rewritten"
    cols = ["name", "tokens", "fvu", "l0", "dead_fraction"]
    np.testing.assert_allclose(again[cols[2:]].to_numpy(float), ref[cols[2:]].to_numpy(float), rtol=1e-5, atol=1e-7)
    assert again[cols[:2]].equals(ref[cols[:2]])


def test_sweep_refuses_other_settings(tmp_path):
    cache, held = synthetic_cache(), synthetic_cache(1024, seed=9).load("x")
    args = sweep_args(tmp_path, "c")
    run_sweep(cache, held, **args)
    args["cfg"] = SweepConfig(widths=(32, 128), ks=(4,), tokens=(1024, 2048, 4096), eval_tokens=1024, per_pass=1)
    with pytest.raises(TrainingError, match="other settings"):
        run_sweep(cache, held, **args)


def test_sweep_config_validation():
    with pytest.raises(ConfigError, match="smaller than the narrowest"):
        SweepConfig(widths=(16, 64), ks=(32,))
    with pytest.raises(ConfigError, match="repeats"):
        SweepConfig(tokens=(10, 10))


def test_plots_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    N, D, L = law_points(0.01)
    ax = plot_fit(fit_power_law(N, L, tokens=D))
    assert len(ax.lines) >= 4 and ax.get_xscale() == "log"
    import pandas as pd

    df = pd.DataFrame({"l0": [4, 8, 16, 4], "fvu": [0.4, 0.3, 0.2, 0.3], "n_latents": [32, 32, 32, 64]})
    ax = plot_frontier(df)
    assert ax.get_xlabel().startswith("L0")


def test_sweep_command_on_a_local_model_folder(tmp_path):
    """`saekit sweep --widths --ks --tokens` end to end on a tiny model; rerunning finds everything done."""
    import subprocess
    import sys

    from tiny import byte_tokenizer, tiny_hf_model

    model_dir = tmp_path / "tiny"
    tiny_hf_model("llama", n_layers=2).save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    args = [sys.executable, "-m", "saekit.cli", "sweep", "--model", str(model_dir), "--hookpoint", "resid_post.1",
            "--widths", "32", "64", "128", "--ks", "4", "--tokens", "2048", "4096", "--batch-size", "512",
            "--harvest-tokens", "4096", "--eval-tokens", "512", "--ce-tokens", "256", "--text", __file__, "--out", str(tmp_path / "sw")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "w128_k4" in r.stdout and (tmp_path / "sw" / "results.csv").exists() and (tmp_path / "sw" / "frontier.png").exists()
    import pandas as pd

    t = pd.read_csv(tmp_path / "sw" / "results.csv")
    assert len(t) == 6 and set(t.tokens) == {2048, 4096}
    last = t[t.tokens == 4096]
    assert last.ce_loss_recovered.notna().all() and t[t.tokens == 2048].ce_loss_recovered.isna().all()
    r2 = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "train:" not in r2.stderr, "a finished sweep trains nothing when rerun"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "sw" / "results.csv"), t)


def test_sweep_command_options_come_from_the_configs():
    from saekit import cli

    args = cli.build_parser().parse_args(["sweep", "--widths", "64", "128", "--ks", "8", "--tokens", "4096", "--batch-size", "256"])
    sweep_kw, sae_kw, train_kw, _ = (cli.config_kwargs(args, s) for s in cli.SWEEP)
    assert SweepConfig(**sweep_kw) == SweepConfig(widths=(64, 128), ks=(8,), tokens=(4096,))
    assert "n_latents" not in sae_kw and "tokens" not in train_kw and train_kw["batch_size"] == 256
    assert cli.main(["sweep", "--widths", "16", "--ks", "32"]) == 2  # refused before any model loads
