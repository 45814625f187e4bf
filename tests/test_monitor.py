"""The training loop's callbacks and the TrainingMonitor, Python side: the data callbacks get, throttling,
Stop -> checkpoint -> exact resume, the history saved with a run and reopened, newly alive latents against
a hand-built answer, the terminal fallback. (The browser side is in tests/test_browser_monitor.py.)"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

import saekit
from saekit import ActivationCache, TrainConfig
from saekit.train import (
    HISTORY_JSON,
    LogArrays,
    NewlyAlive,
    TerminalProgress,
    TokenContexts,
    TrainCallback,
    Trainer,
    TrainingHistory,
    progress_line,
)
from saekit.train.callbacks import Throttle
from saekit.train.history import METRICS
from saekit.widgets import TrainingMonitor

D, F, BATCH, STEPS = 16, 64, 128, 24


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def data(n: int = 10 * BATCH) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, D, generator=g).abs() * torch.rand(n, D, generator=g).lt(0.2) @ torch.randn(D, D, generator=g)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(tokens=STEPS * BATCH, batch_size=BATCH, log_every=2, warmup_steps=3, dead_tokens=2 * BATCH, seed=3), **kw})


class Recorder(TrainCallback):
    def __init__(self, every_s: float = 0.0, stop_at: int | None = None) -> None:
        self.every_s = every_s
        self.stop_at = stop_at
        self.starts, self.logs, self.ends = 0, [], []
        self.trainer = None

    def on_start(self, trainer, data):
        self.starts += 1
        self.trainer = trainer

    def on_log(self, entry, arrays):
        self.logs.append((entry, arrays))
        if self.stop_at is not None and entry["step"] >= self.stop_at:
            self.trainer.request_stop()

    def on_end(self, trainer, info):
        self.ends.append(info)


def test_callback_gets_every_entry_with_consistent_arrays():
    rec = Recorder()
    sae = saekit.train(data(), n_latents=F, k=4, cfg=cfg(), progress=False, callbacks=[rec])
    hist = sae.training_history
    assert rec.starts == 1 and [e["step"] for e, _ in rec.logs] == [e["step"] for e in hist.entries]
    assert [e["step"] for e in hist.entries] == list(range(2, STEPS + 1, 2))
    assert rec.ends == [{"status": "done", "step": STEPS, "tokens": STEPS * BATCH, "checkpoint": None}]
    for entry, arrays in rec.logs:
        assert entry["tokens"] == entry["step"] * BATCH and entry["total_tokens"] == STEPS * BATCH
        assert entry["tokens_per_s"] > 0 and entry["eta_s"] >= 0 and entry["elapsed_s"] > 0
        (s,), (a,) = entry["saes"], arrays
        assert set(METRICS) <= set(s)
        assert a.density_F.shape == (F,) and a.dead_F.shape == (F,) and a.dead_F.dtype == torch.bool
        assert math.isclose(float(a.dead_F.float().mean()), s["dead_fraction"])
        h = s["density_histogram"]
        # every latent is in exactly one place: a log10 bin or the dead (never fired in the window) count
        assert sum(h["counts"]) + h["dead"] == F and h["dead"] == int((a.density_F == 0).sum())
        assert math.isclose(s["window_dead_fraction"], h["dead"] / F)
        # top_rows points at a row where the latent really is that large (codes of the current batch)
        fired = torch.nonzero(a.density_F > 0).flatten()[:3].tolist()
        for f, (r, act) in zip(fired, a.top_rows(fired)):
            if r >= 0:
                vals = torch.where(a.indices[r] == f, a.acts[r].float(), torch.zeros(())).max()
                assert math.isclose(float(vals), act, rel_tol=1e-6)
    assert entry["eta_s"] == 0.0


def test_plain_function_callbacks_still_work():
    got = []
    trainer = Trainer(saekit.Sae(saekit.SaeConfig(d_in=D, n_latents=F, k=4)), cfg(), callbacks=[got.append])
    trainer.fit(data(), progress=False)
    assert got == trainer.history and len(got) == STEPS // 2


def test_throttle_spaces_deliveries_but_keeps_first_and_last():
    clock = iter([0.0, 0.1, 0.2, 1.05, 1.5, 1.6]).__next__
    t = Throttle(1.0, clock)
    assert [t.ready(), t.ready(), t.ready(), t.ready(), t.ready(), t.ready(force=True)] == [True, False, False, True, False, True]
    slow = Recorder(every_s=3600.0)  # far longer than the run: only the first and the last entry arrive
    fast = Recorder()
    sae = saekit.train(data(), n_latents=F, k=4, cfg=cfg(), progress=False, callbacks=[slow, fast])
    assert [e["step"] for e, _ in slow.logs] == [2, STEPS]
    assert len(fast.logs) == len(sae.training_history.entries) == STEPS // 2  # the history keeps every entry


def test_stop_writes_a_checkpoint_that_resumes_exactly(tmp_path):
    x = data()
    whole = saekit.train(x, n_latents=F, k=4, cfg=cfg(), progress=False)

    mon = TrainingMonitor(display=False, every_s=0.0)
    clicker = Recorder()  # presses Stop (as the button does: _stop_clicks += 1) once step 10 is logged

    def click(entry, arrays):
        if entry["step"] == 10:
            mon._stop_clicks += 1

    clicker.on_log = click
    ckpt = tmp_path / "ckpt"
    part = saekit.train(x, n_latents=F, k=4, cfg=cfg(), callbacks=[clicker], monitor=mon, checkpoint_dir=ckpt, out=tmp_path / "part")
    assert mon.status == "stopped" and mon.checkpoint == str(ckpt) and "resume" in mon.message
    h = part.training_history
    assert h.status == "stopped" and h.checkpoint == str(ckpt) and h.entries[-1]["step"] == 10
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 10  # stopped before step 11: nothing half-done
    assert TrainingHistory.load(tmp_path / "part").status == "stopped"

    resumed = saekit.train(x, n_latents=F, k=4, cfg=cfg(), progress=False, checkpoint_dir=ckpt)
    assert resumed.training_history.status == "done"
    assert [e["step"] for e in resumed.training_history.entries] == list(range(2, STEPS + 1, 2))
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


def test_history_saved_with_the_run_and_from_run_round_trip(tmp_path):
    rec = Recorder()
    saes = saekit.train(
        data(), [saekit.SaeConfig(d_in=D, n_latents=F, k=k) for k in (2, 4)], cfg(), progress=False,
        callbacks=[rec], out=tmp_path / "run",
    )
    assert saes[0].training_history is saes[1].training_history
    loaded = TrainingHistory.load(tmp_path / "run")
    assert (tmp_path / "run" / HISTORY_JSON).is_file() and loaded == saes[0].training_history
    assert loaded.saes[1]["k"] == 4 and loaded.status == "done"
    xs, ys = loaded.curve("fvu", 1)
    assert xs == [e["tokens"] for e in loaded.entries] and ys == [e["saes"][1]["fvu"] for e in loaded.entries]

    mon = TrainingMonitor.from_run(tmp_path / "run")
    T = len(loaded.entries)
    curves = np.frombuffer(mon._curves, dtype="<f4").reshape(2, len(METRICS), T)
    assert np.allclose(curves[1, METRICS.index("fvu")], ys)
    assert np.array_equal(np.frombuffer(mon._x, dtype="<f8"), xs)
    assert mon.summary["step"] == STEPS and mon.status == "done" and mon._n_saes == 2
    assert mon.history.entries == loaded.entries

    page = mon.to_html(tmp_path / "monitor.html").read_text()
    assert "training_monitor" in page or "saekit-monitor" in page
    assert page.count("<script") == 2  # the state and the runtime: no data turned into markup

    # a checkpoint folder reopens too (a stopped run before it was saved)
    t = Trainer(saekit.Sae(saekit.SaeConfig(d_in=D, n_latents=F, k=4)), cfg())
    t.fit(data(), progress=False, checkpoint_dir=tmp_path / "ck")
    assert [e["step"] for e in TrainingMonitor.from_run(tmp_path / "ck").history.entries] == [e["step"] for e in t.history]
    with pytest.raises(saekit.errors.TrainingError, match="no training history"):
        TrainingHistory.load(tmp_path)


def test_newly_alive_known_answer():
    """Latents dead (or never fired) at the previous entry and firing now are reported, with the token and
    context of the batch row where they fire hardest."""
    # a cache of 2 contexts: context 0 = tokens 10 11 12 13 at positions 1..4, context 1 = 20 21 22 at 1..3,
    # stored out of order to check the lookup sorts them
    token_ids = torch.tensor([20, 21, 22, 10, 11, 12, 13])
    ctx = torch.tensor([1, 1, 1, 0, 0, 0, 0])
    pos = torch.tensor([1, 2, 3, 1, 2, 3, 4])
    contexts = TokenContexts(token_ids, ctx, pos, decode=lambda i: f"t{i}")
    assert contexts.lookup(0, 3, width=2) == ("t12", ["t11", "t12"])
    assert contexts.lookup(1, 2) == ("t21", ["t20", "t21"])

    tracker = NewlyAlive()
    entry = {"step": 2, "tokens": 10}
    dead = torch.tensor([False, True, True, False])
    first = [LogArrays(torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64), dead)]
    assert tracker.update(entry, first, contexts) == []  # the first entry only sets the baseline
    # now latents 1 (was dead), 2 (was dead) and 3 (never fired) fire; 0 keeps firing (not new)
    acts = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.2, 0.0]])  # [B=3, K=2]
    idx = torch.tensor([[0, 1], [1, 3], [2, 0]])
    meta = {"context_index": torch.tensor([0.0, 1.0, 0.0]), "position": torch.tensor([2.0, 3.0, 4.0])}
    dens = torch.tensor([0.5, 0.2, 0.1, 0.3], dtype=torch.float64)
    rows = tracker.update({"step": 4, "tokens": 20}, [LogArrays(dens, torch.zeros(4, dtype=torch.bool), acts, idx, meta)], contexts)
    got = {r["latent"]: (r["token"], r["context"][-1], r["act"]) for r in rows}
    assert [r["latent"] for r in rows] == [3, 1, 2]  # densest first
    assert got[1][:2] == ("t22", "t22") and math.isclose(got[1][2], 0.3, rel_tol=1e-6)  # row 1 = (context 1, position 3)
    assert got[3][:2] == ("t22", "t22") and math.isclose(got[3][2], 0.7, rel_tol=1e-6)
    assert got[2][:2] == ("t13", "t13") and math.isclose(got[2][2], 0.2, rel_tol=1e-6)  # row 2 = (context 0, position 4)
    # a third entry where nothing changes reports nothing
    assert tracker.update({"step": 6, "tokens": 30}, [LogArrays(dens, torch.zeros(4, dtype=torch.bool), acts, idx, meta)], contexts) == []


def test_monitor_on_a_harvested_cache_shows_tokens_of_newly_alive_latents(tmp_path):
    from test_features import TEXTS
    from tiny import tiny_model

    model = tiny_model("gemma3")
    cache = saekit.harvest(model, TEXTS * 4, hookpoints=["resid_post.1"], n_tokens=10**6, out=tmp_path / "c", progress=False)
    mon = TrainingMonitor(model.tokenizer, display=False, every_s=0.0)
    tc = TrainConfig(tokens=30 * 128, batch_size=128, log_every=2, dead_tokens=256, seed=0)
    saekit.train(cache, n_latents=256, k=4, cfg=tc, monitor=mon)
    assert mon.status == "done" and mon.newly_alive_rows, "some latent should die and come back with dead_tokens=256"
    ids = cache.load("token_ids")
    vocab = {model.tokenizer.decode([int(i)]) for i in ids}
    shown = [r for r in mon.newly_alive_rows if r["token"] is not None]
    assert shown
    for r in shown:
        assert r["context"][-1] == r["token"] and r["token"] in vocab and r["act"] > 0 and 0 < r["density"] <= 1


def test_terminal_fallback_draws_tqdm_and_a_final_figure():
    import matplotlib

    matplotlib.use("Agg")
    out = io.StringIO()
    mon = TerminalProgress(figure=True, file=out)
    saekit.train(data(), n_latents=F, k=4, cfg=cfg(), monitor=mon)
    text = out.getvalue()
    assert f"{STEPS}/{STEPS}" in text and "fvu" in text and "ETA" in text
    assert mon.fig is not None and len(mon.fig.axes) == 6
    assert TrainingMonitor(display=False)._fallback is not None


def test_progress_line_is_compact():
    e = {"step": 40, "steps": 100, "tokens": 163_840, "tokens_per_s": 9100.0, "eta_s": 27.0,
         "saes": [{"fvu": 0.2131, "l0": 31.84, "dead_fraction": 0.0}] * 2}
    assert progress_line(e) == "step 40/100 · 164k tok · fvu 0.213 · L0 31.8 · dead 0.00 (+1 SAEs) · 9.1k tok/s · ETA 0:27"


def test_monitor_rejects_unknown_kwargs_and_has_short_repr():
    with pytest.raises(saekit.errors.WidgetError, match="unknown keyword"):
        TrainingMonitor(display=False, colour="red")
    assert repr(TrainingMonitor(display=False)) == "TrainingMonitor(status='idle', entries=0, saes=0)"


def test_labels_name_the_sparsity_each_architecture_uses():
    """A penalty architecture's label shows its target L0, never the k it ignores; a TopK label shows k."""
    from saekit.train.history import sae_label, sae_summary

    jr = sae_summary(saekit.SaeConfig(d_in=D, n_latents=F, architecture="jumprelu", target_l0=4).to_dict())
    relu = sae_summary(saekit.SaeConfig(d_in=D, n_latents=F, architecture="relu").to_dict())
    topk = sae_summary(saekit.SaeConfig(d_in=D, n_latents=F, k=4).to_dict())
    assert jr["k"] is None and sae_label(jr) == f"jumprelu F={F} L0=4"
    assert sae_label(relu) == f"relu F={F}"
    assert sae_label(topk) == f"topk F={F} k=4"
