"""README.md's Python runs as written: every ```python block is either executed (RUN), in a fresh namespace and a
temporary working directory (the example writes runs/...), or listed in SKIPPED with the reason it cannot run here;
a new block fails the test until it is one or the other. The claims the comments make (shapes, 32 latents active at
every real position, the files written, the table printed) are checked against what the code produced.

The ten lines use the real default model (`real_model`). As written they harvest 100k tokens, train on 300k and
evaluate on 4,096 tokens: 405 s measured on a 2-core CPU shared with another job (OMP_NUM_THREADS=1; 719 s with
torch's default threads), so by default the test shrinks those three budgets, and nothing else, with BUDGETS:
each is a literal that must appear exactly once in the block, and the code run is the README's text with only
those numbers changed (107 s on the same machine). SAEKIT_README_AS_WRITTEN=1 runs the README's text unchanged.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

BUDGETS = {
    # README text -> what the test runs instead (token budgets only; CI time, not behaviour)
    "n_tokens=100_000": "n_tokens=20_000",  # harvest: 100k -> 20k tokens
    "tokens=300_000": "tokens=60_000",  # training: the same 3 epochs over the smaller harvest
    "n_tokens=4096": "n_tokens=1024",  # held-out evaluation
}
AS_WRITTEN = os.environ.get("SAEKIT_README_AS_WRITTEN") == "1"

SKIPPED = {
    # a text found in exactly one block -> why that block does not run in the tests
    'load_model("google/gemma-3-270m")': "needs internet (a hub id) and NDIF (an API key), and its second line names "
    "placeholders (my_transformers_model, tok) the reader supplies",
    "feature_stats(model, sae)": "continues the ten lines with a 100k-token statistics pass (minutes more on a CPU); "
    "the same calls run in notebooks/04_inspect_features, which CI executes",
    "from saekit import Ablate, Clamp, Splice, Steer": "a fragment: `prompt` and `texts` are placeholders the reader "
    "supplies; notebooks/05_interventions runs these calls",
    "from saekit.circuits import logit_diff": "continues the ten lines with minutes of attribution on a CPU; "
    "notebooks/09_feature_circuits and tests/test_circuits_real.py run these calls",
}
RUN = ("model = saekit.load_model()",)
"""A text found in exactly one block -> the blocks that run; with SKIPPED they must cover every block."""
SHIPPED = "saekit.pretrained.available()"
"""The block that loads the shipped SAEs (run by its own test: no model, seconds)."""


def python_blocks(markdown: str) -> list[str]:
    """The code of every ```python fenced block, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", markdown, flags=re.S | re.M)


def _the_block(blocks: list[str], marker: str) -> int:
    hits = [i for i, b in enumerate(blocks) if marker in b]
    assert len(hits) == 1, f"{marker!r} should name exactly one README python block, names {len(hits)}"
    return hits[0]


def test_python_blocks_are_found():
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n\nz = 3\n```\n") == [
        "x = 1\n",
        "y = 2\n\nz = 3\n",
    ]


def _stated_shapes(code: str) -> dict[str, tuple[int, ...]]:
    """{name: shape} for each `name = ...  # ... [a, b]` line: the last list of integers in its comment."""
    out = {}
    for line in code.splitlines():
        m = re.match(r"(\w+)\s*=.*#(.*)$", line)
        if m:
            lists = re.findall(r"\[(\d+(?:,\s*\d+)*)\]", m.group(2))
            if lists:
                out[m.group(1)] = tuple(int(x) for x in lists[-1].split(","))
    return out


def with_budgets(code: str, budgets: dict[str, str]) -> str:
    """`code` with each budget literal replaced; each must appear exactly once (as a whole literal)."""
    for text, replacement in budgets.items():
        pattern = rf"(?<![\w.]){re.escape(text)}(?![\w.])"
        assert len(re.findall(pattern, code)) == 1, f"the README's ten lines should hold {text!r} exactly once"
        code = re.sub(pattern, replacement, code)
    return code


def _argument(code: str, call: str, name: str) -> int:
    """The integer literal passed as `name=` on the one line of `code` that calls `call`."""
    (line,) = [line for line in code.splitlines() if call in line]
    (value,) = re.findall(rf"(?<![\w.]){name}=([\d_]+)", line)
    return int(value)


def test_budgets_replace_whole_literals_only():
    code = "a(n_tokens=100_000)\nb(tokens=300_000)\nc(n_tokens=4096)\n"
    assert with_budgets(code, BUDGETS) == "a(n_tokens=20_000)\nb(tokens=60_000)\nc(n_tokens=1024)\n"
    with pytest.raises(AssertionError, match="exactly once"):
        with_budgets("a(n_tokens=100_0000)\n", {"n_tokens=100_000": "n_tokens=1"})
    assert _argument(code, "c(", "n_tokens") == 4096 and _argument(code, "b(", "tokens") == 300_000


@pytest.mark.real_model
def test_readme_python_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    skipped = {_the_block(blocks, marker) for marker in SKIPPED}
    run = [_the_block(blocks, marker) for marker in RUN]
    # a new block fails here until it runs (RUN) or says why it cannot (SKIPPED)
    shipped = _the_block(blocks, SHIPPED)
    assert sorted(skipped | set(run) | {shipped}) == list(range(len(blocks))) and not skipped & set(run), (len(blocks), skipped, run)
    assert len(run) == 1 and len(blocks) == 6

    (ten_lines,) = (blocks[i] for i in run)
    assert len([line for line in ten_lines.splitlines() if line.strip()]) <= 11  # "Ten lines of Python"
    code = ten_lines if AS_WRITTEN else with_budgets(ten_lines, BUDGETS)
    harvested = _argument(code, "saekit.harvest(", "n_tokens")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    t0 = time.perf_counter()
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - the README's own code (budgets as above)
    seconds = time.perf_counter() - t0
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nREADME ten lines ({'as written' if AS_WRITTEN else 'smaller budgets'}) ran in {seconds:.0f} s")
        for marker, why in SKIPPED.items():
            print(f"README block with {marker!r} not run: {why}")

    model, cache, sae, ctx, acts, latents = (ns[k] for k in ("model", "cache", "sae", "ctx", "acts", "latents"))
    # "Gemma 3 270M, offline"; the harvest and the folders it writes
    assert (model.n_layers, model.d_model) == (18, 640) and model.name == "gemma-3-270m"
    assert cache.n_tokens == harvested and (tmp_path / "runs" / "acts" / "manifest.json").is_file()
    assert {"cfg.json", "sae_weights.safetensors"} <= {p.name for p in (tmp_path / "runs" / "l6").iterdir()}
    assert (sae.n_latents, sae.cfg.k, sae.cfg.hookpoint) == (4096, 32, "resid_post.6")
    # print(result.table()): "L0, FVU, CE-loss recovered, KL..."
    for name in ("l0", "fvu", "ce_loss_recovered", "kl_divergence"):
        assert name in printed, (name, printed)
    assert abs(ns["result"].to_dict()["l0"] - 32) < 0.5
    # the shapes the comments state are the shapes
    stated = _stated_shapes(ten_lines)
    assert set(stated) == {"ctx", "acts", "latents"}, stated
    assert tuple(ctx.input_ids.shape) == stated["ctx"]
    assert tuple(acts.shape) == stated["acts"]
    assert tuple(latents.shape) == stated["latents"]
    # "(8 + 3)": each text's BOS and tokens, the short one padded; "real positions only"
    lengths = ctx.attention_mask.sum(1).tolist()
    assert lengths == [8, 3] and latents.shape[0] == sum(lengths) and not ctx.attention_mask.all()
    # "32 active each": exactly k latents fire at every real position, BOS included
    active = (latents > 0).sum(-1)
    assert torch.equal(active, torch.full_like(active, 32)), active.tolist()
    # the selection is the [2, 8] grid's real positions, in order; the grid's padding is what it leaves out
    grid = sae.encode(acts)
    assert grid.shape == (2, 8, 4096)
    torch.testing.assert_close(latents, grid[ctx.attention_mask.bool()])


def test_readme_shipped_saes_block_runs_as_written():
    """The shipped-SAEs block runs as written, and the list and sizes the text beside it states are true."""
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    ns: dict = {"__name__": "__readme__"}
    exec(compile(blocks[_the_block(blocks, SHIPPED)], str(README), "exec"), ns)  # noqa: S102 - the README's own code
    import saekit

    names = saekit.pretrained.available()["gemma-3-270m"]
    assert set(names) == {"resid_post.2", "resid_post.6", "resid_post.10", "resid_post.14", "transcoder.6"}
    assert ns["sae"].n_latents == 4096 and ns["sae"].cfg.k == 32
    assert (ns["tc"].cfg.hookpoint, ns["tc"].cfg.target_hookpoint) == ("mlp_in.6", "mlp_out.6")
    mb = sum(p.stat().st_size for p in saekit.pretrained.ROOT.rglob("*") if p.is_file() and "__pycache__" not in p.parts) / 1e6
    stated = int(re.search(r"(\d+) MB in bf16 with\s+their statistics", text).group(1))
    assert abs(mb - stated) <= 2, (mb, stated)
