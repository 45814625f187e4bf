#!/usr/bin/env bash
# The GPU check (issue 12): on a machine with CUDA, the `gpu`-marked tests (fast paths = reference paths,
# values and gradients; a short CUDA training run matches the CPU run) and the training benchmark at 16384
# and 65536 latents, in under 5 minutes, printing BENCHMARKS.md rows.
#
#   here, once (pip and the package index reachable):  bash benchmarks/device_check.sh fetch
#       downloads the wheels the GPU image lacks (nnsight and its small dependencies, CPython 3.12) into .whl/
#   on the GPU machine (the device tool, carry [".whl"]): bash benchmarks/device_check.sh
#       installs them into /tmp/site, runs the tests, then the benchmark; exit status = the tests'
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
NEEDS="nnsight==0.8.1 greenlet==3.5.6 websocket-client==1.9.2 zstandard==0.25.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2"

if [ "${1:-}" = fetch ]; then
  exclude=$(git rev-parse --git-path info/exclude)
  if [ "$WHEELS" = .whl ] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then echo /.whl/ >> "$exclude"; fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" $NEEDS
  ls -la "$WHEELS"
  exit
fi

python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "device_check: no CUDA device here"; exit 2; }
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
start=$(date +%s)
timeout 170 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_train_family.py
status=$?
echo "gpu tests: exit $status after $(( $(date +%s) - start )) s"
timeout 100 python3 benchmarks/bench_train_device.py --latents 16384 65536 --steps 20
echo "device_check: done in $(( $(date +%s) - start )) s"
exit $status
