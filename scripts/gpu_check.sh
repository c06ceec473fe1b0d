#!/usr/bin/env bash
# The GPU check: one prepared script, at most about 8 minutes on one GPU. It runs
#   1. the CUDA-marked tests (tests/engine/test_cuda.py: fp16 + gradient scaling, data on the GPU, resume,
#      SyncBatchNorm under 2-process DDP where there are 2 GPUs);
#   2. a few hundred fp16 steps each of dann, dsn, cycada and adaptsegnet (the loss scale over the run,
#      the updates skipped for overflow and the longest run of them);
#   3. scripts/bench.py on CUDA for dann and dsn (the trainer against the bare step, fp16 and fp32);
#   4. a 2-process DDP run of dann where there are 2 GPUs;
# and prints one summary table (also $OUT/gpu_check.md and $OUT/gpu_check.json when $OUT is set).
#
#   bash scripts/gpu_check.sh                 # on a GPU machine with the project installed
#   bash scripts/gpu_check.sh --prepare       # here, before using the lent device machine, which has no
#                                             # internet and lacks Hydra: wheels of what it lacks and the
#                                             # MNIST files go to .gpu/ (git-ignored), then run there
#                                             # `bash scripts/gpu_check.sh` with carry [".gpu"]
#   GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh   # the same plumbing on a CPU, a few steps (a dry run)
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  set -e
  mkdir -p .gpu/wheels
  # the packages the device image lacks (pure Python; versions as pinned here)
  python -m pip wheel -q --no-deps -w .gpu/wheels hydra-core==1.3.8 omegaconf==2.3.1 \
    antlr4-python3-runtime==4.9.3 cityscapesscripts==2.3.0
  root=$(python -c "from uda.data.files import data_root; print(data_root())")
  python -c "from uda.data.mnist import ensure_mnist; from pathlib import Path; ensure_mnist(Path('$root'))"
  tar -czf .gpu/mnist_raw.tar.gz -C "$root/MNIST/raw" .
  du -sh .gpu
  exit 0
fi

if [ -d .gpu/wheels ]; then  # the device machine: install the carried wheels beside its own packages
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/uda_site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH="/tmp/uda_site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f .gpu/mnist_raw.tar.gz ]; then  # and the MNIST files (MNIST-M and digits_seg are built from them)
  export UDA_DATA=${UDA_DATA:-/tmp/uda_data}
  mkdir -p "$UDA_DATA/MNIST/raw" && tar -xzf .gpu/mnist_raw.tar.gz -C "$UDA_DATA/MNIST/raw"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
exec "$PY" scripts/gpu_check.py "$@"
