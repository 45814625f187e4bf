#!/usr/bin/env bash
# Builds the peers' benchmark environment (never a runtime or test dependency of saekit):
# sae-lens and dictionary-learning next to saekit, with the CPU torch wheel forced back afterwards.
#   bash benchmarks/peers/make_venv.sh [/work/peers-venv]
set -euo pipefail
VENV=${1:-/work/peers-venv}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TORCH=$(python3 -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || echo 2.13.0)
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
  || "$VENV/bin/pip" install -q "torch==$TORCH"
"$VENV/bin/pip" install -q sae-lens dictionary-learning
# the peers pull the CUDA torch build (and torchvision): force the CPU wheel back
"$VENV/bin/pip" uninstall -y -q torchvision || true
"$VENV/bin/pip" install -q --force-reinstall --no-deps "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
  || "$VENV/bin/pip" install -q --force-reinstall --no-deps "torch==$TORCH"
"$VENV/bin/pip" install -q -e "$REPO" --no-deps
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, torch
for p in ("sae-lens", "dictionary-learning", "transformers", "nnsight"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "missing")
print("torch", torch.__version__, "cuda", torch.version.cuda)
PY
