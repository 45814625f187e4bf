"""Shared fixtures: tiny random models (fast, no download) and the real default model (session-wide)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def real_model():
    """Gemma 3 270M from the offline registry package (converted once into the saekit cache)."""
    import saekit

    return saekit.load_model()


@pytest.fixture(scope="session")
def real_cache(real_model, tmp_path_factory):
    """20k training tokens of resid_post.6 activations, harvested once per test session."""
    import saekit

    out = tmp_path_factory.mktemp("acts") / "resid_post.6"
    return saekit.harvest(real_model, hookpoints="resid_post.6", n_tokens=20_480, out=out, progress=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
