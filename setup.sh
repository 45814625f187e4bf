#!/usr/bin/env bash
# Set up saekit in the current Python environment.
#   bash setup.sh         the library and its command line
#   bash setup.sh test    plus the test tools (pytest, nbval, JupyterLab, Playwright) and Debian's chromium
# PyTorch: kept if already installed; otherwise the CUDA build when an NVIDIA GPU is present, else the
# CPU build (never the multi-GB CUDA packages on a CPU-only machine).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS=0
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: installing the standard (CUDA) torch build"
  "${PIP[@]}" "torch>=2.4"
elif probe="$(mktemp -d)" && trap 'rm -rf "$probe"' EXIT \
    && "$PY" -m pip download -q --disable-pip-version-check --no-index --no-deps "torch==2.13.0" -d "$probe" >/dev/null 2>&1; then
  # a local CPU wheel (pip's find-links) is there: torch 2.13.0+cpu ranks above PyPI's 2.13.0
  echo "setup: installing the local CPU wheel of torch 2.13.0"
  "${PIP[@]}" "torch==2.13.0"
else
  echo "setup: installing the CPU build of torch 2.13.0"
  "${PIP[@]}" "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
fi

if [[ "${1:-}" == "test" ]]; then
  "${PIP[@]}" -e ".[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
      echo "setup: installing Debian's chromium for the browser tests"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "setup: could not install chromium; browser tests will be skipped"
    else
      echo "setup: no chromium and no root apt-get; browser tests will be skipped"
    fi
  fi
else
  "${PIP[@]}" -e .
fi
echo "setup: done in ${SECONDS} s ($("$PY" -c 'import saekit, torch; print("saekit", saekit.__version__, "torch", torch.__version__)'))"
