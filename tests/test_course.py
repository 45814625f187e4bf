"""The course track (saekit.course, notebooks/course/): right answers pass, each deliberately wrong
implementation gets its intended diagnosis, no message prints the reference's values, and the exercise
notebooks are the solutions minus their solution blocks, whose check cells fail with "not written yet".

The solutions notebooks themselves run under nbval (`pytest --nbval-lax tests notebooks`); here their code
cells run too, except the ones tagged `real-model` (nbval runs those).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as Fn

from saekit import course
from saekit.course import attribution, auxk, checking, forward, metrics, steering
from saekit.errors import ExerciseError, SaekitError

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "notebooks" / "course"


# -- right answers -----------------------------------------------------------------------------------


def encode(x, W, b, c):
    return torch.relu((x - c) @ W.T + b)


def decode(z, Wd, c):
    return z @ Wd + c


def topk(pre, k):
    v, i = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.relu())


def fvu(x, x_hat):
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def next_token_loss(logits, ids):
    return Fn.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def ce_loss_recovered(c, s, z):
    return (z - s) / (z - c)


def auxk_loss(x_in, err, W, b, Wd, dead, k_aux, tv):
    if not dead.any():
        return err.new_zeros(())
    pre = x_in @ W[dead].T + b[dead]
    v, i = pre.topk(k_aux, dim=-1)
    return ((torch.zeros_like(pre).scatter(-1, i, v.relu()) @ Wd[dead]) - err.detach()).pow(2).sum() / tv


def steer(acts, d, s):
    add = torch.zeros_like(acts)
    add[:, 1:] = s * d / d.norm()
    return acts + add


def atp(metric, fc, fp):
    f = fc.clone().requires_grad_(True)
    return torch.autograd.grad(metric(f), f)[0] * (fp - fc)


RIGHT = {
    "encode": encode, "decode": decode, "topk": topk, "fvu": fvu, "next_token_loss": next_token_loss,
    "ce_loss_recovered": ce_loss_recovered, "auxk_loss": auxk_loss, "steer": steer, "attribution_patching": atp,
}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_right_answers_pass(name, capsys):
    getattr(course, f"check_{name}")(RIGHT[name])
    assert f"\u2713 `{name}` is right" in capsys.readouterr().out


def test_every_check_is_exported_and_tested():
    checks = {n[len("check_"):] for n in course.__all__ if n.startswith("check_")}
    assert checks == set(RIGHT)
    assert issubclass(ExerciseError, SaekitError) and issubclass(ExerciseError, AssertionError)


# -- wrong answers, and what each is told -------------------------------------------------------------


def _after_bos(acts, v):
    add = torch.zeros_like(acts)
    add[:, 1:] = v
    return acts + add


def _inplace_steer(acts, d, s):
    acts[:, 1:] += s * d / d.norm()
    return acts


def _inplace_atp(metric, fc, fp):
    fp -= fc  # the caller's f_patch changed
    f = fc.clone().requires_grad_(True)
    return torch.autograd.grad(metric(f), f)[0] * fp


def _fvu_breaks_backward(x, xh):
    d = xh - x
    out = d.pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    d.mul_(1.0)  # pow saved d for the backward pass
    return out


def _straight_through_topk(pre, k):
    return topk(pre, k).detach() + pre - pre.detach()


def _detached_encode(x, W, b, c):
    return encode(x, W, b, c).detach()


def _weights_data_encode(x, W, b, c):
    return torch.relu((x - c) @ W.data.T + b)


WRONG = [
    # (check, wrong implementation, a phrase its message must contain)
    ("encode", lambda x, W, b, c: (x - c) @ W.T + b, "ReLU"),
    ("encode", lambda x, W, b, c: torch.relu(x @ W.T + b), "b_dec is not subtracted"),
    ("encode", lambda x, W, b, c: torch.relu((x + c) @ W.T + b), "b_dec is added"),
    ("encode", lambda x, W, b, c: torch.relu((x - c) @ W.T), "b_enc, the encoder bias, is missing"),
    ("encode", lambda x, W, b, c: torch.relu((x - c) @ W.T) + b, "the ReLU comes before b_enc"),
    ("encode", lambda x, W, b, c: torch.relu((x - c) @ W + b), "one row per latent"),
    ("encode", lambda x, W, b, c: encode(x, W, b, c).T, "shape (10, 5)"),
    ("encode", _detached_encode, "no gradient flows"),
    ("encode", _weights_data_encode, "no gradient reaches `W_enc_FD`"),
    ("encode", lambda x, W, b, c: encode(x, W, b, c) * 1.01, "values are wrong; the first is at [0, "),
    ("encode", lambda x, W, b, c: None, "returned None"),
    ("encode", lambda x, W, b, c: (x - c) @ W.T + b - 5.0, "element [0, 0] is negative"),
    ("decode", lambda z, Wd, c: z @ Wd, "b_dec is not added back"),
    ("decode", lambda z, Wd, c: z @ Wd - c, "b_dec is subtracted"),
    ("decode", lambda z, Wd, c: z @ Wd.T + c, "raised RuntimeError"),
    ("topk", lambda p, k: torch.zeros_like(p).scatter(-1, p.topk(k, -1).indices, p.topk(k, -1).values), "apply a ReLU to the kept values"),
    ("topk", lambda p, k: p.topk(k, dim=-1).values.relu(), "put the k kept values back"),
    ("topk", lambda p, k: p.relu(), "keep only the k largest"),
    ("topk", lambda p, k: torch.zeros_like(p).scatter(0, p.topk(k, 0).indices, p.topk(k, 0).values.relu()), "over the batch, dim 0"),
    ("topk", lambda p, k: torch.zeros_like(p).scatter(-1, p.topk(k, -1, largest=False).indices, p.topk(k, -1, largest=False).values.relu()), "k smallest"),
    ("topk", lambda p, k: torch.zeros_like(p).scatter(-1, p.abs().topk(k, -1).indices, p.gather(-1, p.abs().topk(k, -1).indices).relu()), "absolute value"),
    ("topk", _straight_through_topk, "only the kept (non-zero) latents pass gradient"),
    ("topk", lambda p, k: topk(p, k + 1), "non-zero latents; at most k="),
    ("topk", lambda p, k: p.relu_().topk(k)[0], "in place"),
    ("fvu", lambda x, xh: (x - xh).pow(2).sum() / x.pow(2).sum(), "subtract x.mean(0) first"),
    ("fvu", lambda x, xh: (x - xh).pow(2).sum() / (x - x.mean(-1, keepdim=True)).pow(2).sum(), "each token's own mean"),
    ("fvu", lambda x, xh: 1 - fvu(x, xh), "explained variance"),
    ("fvu", lambda x, xh: ((x - xh).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean(), "per-token ratios"),
    ("fvu", lambda x, xh: ((x - xh).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean(), "per-dimension ratios"),
    ("fvu", lambda x, xh: (x - xh).pow(2).mean(), "mean squared error"),
    ("fvu", lambda x, xh: (x - xh).pow(2).sum() / x.var(0).sum(), "sum of squared deviations"),
    ("fvu", lambda x, xh: (x - xh).pow(2).sum() / (x.var(0) * x.shape[0]).sum(), "unbiased variance"),
    ("fvu", _fvu_breaks_backward, "changed in place after use"),
    ("fvu", lambda x, xh: float(fvu(x, xh.detach())), "returned a Python float"),
    ("fvu", lambda x, xh: (x - xh).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(), "one number per token"),
    ("fvu", lambda x, xh: fvu(x, xh.detach()), "no gradient flows"),
    ("next_token_loss", lambda lg, ids: Fn.cross_entropy(lg.flatten(0, 1), ids.flatten()), "predict the next token"),
    ("next_token_loss", lambda lg, ids: Fn.cross_entropy(lg[:, 1:].flatten(0, 1), ids[:, :-1].flatten()), "wrong way"),
    ("next_token_loss", lambda lg, ids: Fn.cross_entropy(lg[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"), "return the mean"),
    ("next_token_loss", lambda lg, ids: -lg[:, :-1].softmax(-1).gather(-1, ids[:, 1:, None]).mean(), "log-probability"),
    ("next_token_loss", lambda lg, ids: Fn.nll_loss(lg[:, :-1].flatten(0, 1), ids[:, 1:].flatten()), "log_softmax over the vocabulary"),
    ("next_token_loss", lambda lg, ids: Fn.cross_entropy(lg[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none"), "one loss per prediction"),
    ("ce_loss_recovered", lambda c, s, z: (s - c) / (z - c), "1 minus the score"),
    ("ce_loss_recovered", lambda c, s, z: max(0.0, min(1.0, (z - s) / (z - c))), "clipped"),
    ("ce_loss_recovered", lambda c, s, z: (z - s) / z, "the zero-ablation loss itself"),
    ("ce_loss_recovered", lambda c, s, z: (z - s) / (s - c), "gap between the spliced and the clean loss"),
    ("ce_loss_recovered", lambda c, s, z: (z - s) / (z - c) if s != c else (z - s) / (s - c), "ZeroDivisionError"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: auxk_loss(x, e, W, b, Wd, torch.ones_like(d), k, tv) if d.any() else e.new_zeros(()), "among the dead ones only"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: auxk_loss(x, e, W, b, Wd, d, k, tv) * tv, "not divided by total_variance"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: auxk_loss(x, e, W, b, Wd, d, k, tv) * tv / e.numel() / tv, "averaged; sum it"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: ((auxk_loss(x, e, W, b, Wd, d, k, tv) * tv) ** 0.5) / tv if d.any() else e.new_zeros(()), "that is a norm"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: _auxk_no_detach(x, e, W, b, Wd, d, k, tv), "err_BD.detach()"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: _auxk_no_relu(x, e, W, b, Wd, d, k, tv), "ReLU the k_aux kept"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: _auxk_wrong_rows(x, e, W, b, Wd, d, k, tv), "W_dec[dead_F]"),
    ("auxk_loss", lambda x, e, W, b, Wd, d, k, tv: _auxk_always(x, e, W, b, Wd, d, k, tv), "return a zero tensor"),
    ("steer", lambda a, d, s: _after_bos(a, s * d), "make it unit norm"),
    ("steer", lambda a, d, s: a + s * d / d.norm(), "position 0 (the BOS separator) is steered"),
    ("steer", lambda a, d, s: a + s * d, "not unit norm, and position 0"),
    ("steer", lambda a, d, s: steer(a, d, -s), "sign is flipped"),
    ("steer", lambda a, d, s: torch.cat([a[:, :-1], a[:, -1:] + s * d / d.norm()], 1), "only the last position"),
    ("steer", lambda a, d, s: _after_bos(a, s * d / d.sum()), "sum of its entries"),
    ("steer", lambda a, d, s: s * d / d.norm(), "only the added vector"),
    ("steer", _inplace_steer, "in place"),
    ("steer", lambda a, d, s: steer(a.detach(), d, s), "no gradient flows"),
    ("attribution_patching", lambda m, fc, fp: atp(m, fc, fp + 1) - atp(m, fc, fp), "the gradient alone"),
    ("attribution_patching", lambda m, fc, fp: -atp(m, fc, fp), "the sign is flipped"),
    ("attribution_patching", lambda m, fc, fp: -atp(m, fp, fc), "taken at the patched values"),
    ("attribution_patching", lambda m, fc, fp: fp - fc, "that is the change of each node alone"),
    ("attribution_patching", lambda m, fc, fp: attribution.exact_effects(m, fc, fp), "exact effects of patching"),
    ("attribution_patching", lambda m, fc, fp: atp(m, fc, fp).sum(), "one score per node"),
    ("attribution_patching", lambda m, fc, fp: torch.autograd.grad(m(fc), fc)[0] * (fp - fc), "differentiate with respect to a copy"),
    ("attribution_patching", _inplace_atp, "changed its argument `f_patch_TF` in place"),
]


def _auxk_no_detach(x, e, W, b, Wd, dead, k, tv):
    if not dead.any():
        return e.new_zeros(())
    pre = x @ W[dead].T + b[dead]
    v, i = pre.topk(k, dim=-1)
    return ((torch.zeros_like(pre).scatter(-1, i, v.relu()) @ Wd[dead]) - e).pow(2).sum() / tv


def _auxk_no_relu(x, e, W, b, Wd, dead, k, tv):
    if not dead.any():
        return e.new_zeros(())
    pre = x @ W[dead].T + b[dead]
    v, i = pre.topk(k, dim=-1)
    return ((torch.zeros_like(pre).scatter(-1, i, v) @ Wd[dead]) - e.detach()).pow(2).sum() / tv


def _auxk_wrong_rows(x, e, W, b, Wd, dead, k, tv):
    if not dead.any():
        return e.new_zeros(())
    pre = x @ W[dead].T + b[dead]
    v, i = pre.topk(k, dim=-1)
    return ((torch.zeros(x.shape[0], W.shape[0]).scatter(-1, i, v.relu()) @ Wd) - e.detach()).pow(2).sum() / tv


def _auxk_always(x, e, W, b, Wd, dead, k, tv):
    pre = x @ W[dead].T + b[dead]
    v, i = pre.topk(k, dim=-1)
    return ((torch.zeros_like(pre).scatter(-1, i, v.relu()) @ Wd[dead]) - e.detach()).pow(2).sum() / tv


class Recorder:
    """Records every reference value a check compares against, to show that no message prints one."""

    def __init__(self, monkeypatch):
        self.wants: list[torch.Tensor] = []
        original = checking.compare

        def compare(got, want, name, **kw):
            self.wants.append(torch.as_tensor(want).detach().double().flatten())
            return original(got, want, name, **kw)

        for module in (forward, metrics, auxk, steering, attribution, checking):
            monkeypatch.setattr(module, "compare", compare)

    def leaked(self, message: str) -> list[str]:
        """Numbers in `message` (3+ significant digits) equal to some reference value."""
        found = []
        for token in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", message):
            v = float(token)
            digits = len(token.lstrip("-").replace(".", "").lstrip("0").split("e")[0])
            if digits < 3 or v == 0:
                continue
            for w in self.wants:
                if bool(((w - v).abs() <= 10 ** -(digits - 1) * max(abs(v), 1e-12)).any()):
                    found.append(token)
        return found


@pytest.mark.parametrize("check,wrong,phrase", WRONG, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(WRONG)])
def test_wrong_answers_get_their_diagnosis(check, wrong, phrase, monkeypatch):
    rec = Recorder(monkeypatch)
    with pytest.raises(ExerciseError) as info:
        getattr(course, f"check_{check}")(wrong)
    message = str(info.value)
    assert phrase in message, message
    assert message.startswith(f"`{check}`"), message
    assert not rec.leaked(message), f"the message prints reference values {rec.leaked(message)}: {message}"


def test_the_leak_detector_sees_a_leak(monkeypatch):
    """The recorder itself: a message that printed a reference value would be caught."""
    rec = Recorder(monkeypatch)
    with pytest.raises(ExerciseError):
        course.check_fvu(lambda x, xh: fvu(x, xh) * 1.5)
    first = float(rec.wants[0][0])
    assert rec.leaked(f"the answer is {first:.6g}")
    assert not rec.leaked("the answer is 123.456")


def test_not_written_and_not_callable():
    def stub(*args):
        raise NotImplementedError("write encode")

    with pytest.raises(ExerciseError, match="`encode` is not written yet"):
        course.check_encode(stub)
    with pytest.raises(ExerciseError, match="pass your function itself"):
        course.check_encode(torch.zeros(3))


def test_value_diagnosis_names_the_element_not_the_answer():
    """A wrong value no known mistake explains: count, first index, the student's value, the direction."""

    def off_by_one_element(x, W, b, c):
        out = encode(x, W, b, c).clone()
        out[1, 2] = out[1, 2] + 0.5
        return out

    with pytest.raises(ExerciseError) as info:
        course.check_encode(off_by_one_element)
    assert "1 of 50 values are wrong; the first is at [1, 2]" in str(info.value)
    assert "(too large)" in str(info.value)


# -- the notebooks -------------------------------------------------------------------------------------


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_exercises", COURSE / "make_exercises.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


SOLUTIONS = sorted((COURSE / "solutions").glob("*.ipynb"))


def test_course_has_its_notebooks_and_guide():
    assert [p.name for p in SOLUTIONS] == [
        "01_sae_forward.ipynb", "02_metrics.ipynb", "03_auxk.ipynb", "04_steering_and_attribution.ipynb",
    ]
    for p in SOLUTIONS:
        assert (COURSE / p.name).exists(), f"exercise notebook {p.name} missing: run python notebooks/course/make_exercises.py"
    guide = (COURSE / "README.md").read_text()
    for p in SOLUTIONS:
        assert p.name in guide


def test_exercises_are_the_solutions_without_solution_blocks():
    maker = _load_maker()
    for path, text in maker.expected().items():
        assert path.read_text() == text, f"{path.name} is out of date: run python notebooks/course/make_exercises.py"
        assert not any("BEGIN SOLUTION" in _source(c) for c in json.loads(text)["cells"] if c["cell_type"] == "code")


def test_strip_solution_refuses_unbalanced_markers():
    maker = _load_maker()
    assert maker.strip_solution("def f(x):\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION") == (
        'def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError("write f")'
    )
    with pytest.raises(ValueError):
        maker.strip_solution("def f(x):\n    # BEGIN SOLUTION\n    return x")


def _run_cells(path: Path):
    """Run a notebook's code cells in one namespace, skipping `real-model` cells; yield (source, error)."""
    ns: dict = {}
    for cell in _cells(path):
        if "real-model" in cell.get("metadata", {}).get("tags", []):
            continue
        src = _source(cell)
        try:
            exec(compile(src, f"{path.name}", "exec"), ns)
            yield src, None
        except Exception as err:  # noqa: BLE001 - reported to the caller
            yield src, err


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_cells_pass_their_checks(path, capsys):
    checks = 0
    for src, err in _run_cells(path):
        assert err is None, f"{path.name}: cell\n{src}\nraised {err!r}"
        checks += src.count("course.check_")
    assert checks >= 1
    assert capsys.readouterr().out.count("\u2713") == checks


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_exercise_check_cells_fail_with_not_written_yet(path):
    exercise = COURSE / path.name
    seen = 0
    for src, err in _run_cells(exercise):
        m = re.search(r"course\.check_(\w+)\((\w+)\)", src)
        if m:
            seen += 1
            assert isinstance(err, ExerciseError), f"{exercise.name}: {src} raised {err!r}"
            assert str(err).startswith(f"`{m.group(2)}` {checking.NOT_WRITTEN}"), str(err)
        else:  # the other cells run, or stop at a function not written yet
            assert err is None or isinstance(err, NotImplementedError), f"{exercise.name}: cell\n{src}\nraised {err!r}"
    assert seen >= 1


def test_ipython_shows_the_message_alone():
    """In a notebook a failed check shows one line (IPython's `_render_traceback_`), not the checker's frames."""
    lines = ExerciseError("`encode`: b_dec is missing")._render_traceback_()
    assert len(lines) == 1 and lines[0].endswith("`encode`: b_dec is missing")
