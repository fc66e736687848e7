#!/usr/bin/env bash
# Set up pocketnn on a fresh machine: a virtual environment in .venv with the package,
# the real MNIST and Fashion-MNIST files fetched, verified and cached, and the compiled
# engine's kernels built once (so the first epoch compiles nothing).
#   bash scripts/setup.sh          # to train and run models
#   bash scripts/setup.sh --dev    # also test tools and the ARM cross-compiler + emulator
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install --quiet -e ".[fast,test,images,plot,ray]"
  if [ -f .ci/install-arm.sh ]; then
    bash .ci/install-arm.sh
  fi
else
  .venv/bin/python -m pip install --quiet -e ".[fast]"
fi
.venv/bin/python -m pocketnn.datasets fetch mnist fashion-mnist
# The default engine's C kernels, built with the host's C compiler into the kernel cache;
# without a compiler pocketnn runs the fused (numba) or blas engine instead.
if ! .venv/bin/python -m pocketnn.engines.compiled; then
  echo "setup: the compiled engine's kernels were not built (see above); pocketnn uses" \
    "the fused or blas engine (apt-get install gcc, then run this script again)" >&2
fi
