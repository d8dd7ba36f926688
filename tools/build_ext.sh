#!/usr/bin/env bash
# Build and install codetr (editable) with its compiled op, unless the build is current.
#
# "Current" means: a stamp holding the hash of setup.py and every C++/CUDA source matches, and
# `import codetr._C` works. Anything else (first run, edited kernels, a failed or interrupted
# build, a deleted .so) rebuilds. FORCE_CUDA / TORCH_CUDA_ARCH_LIST are part of the hash.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.codetr-build-stamp"
cd "$ROOT"
WANT="$( (cat setup.py; find projects/codetr/layers/csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' \) | sort | xargs cat;
          echo "FORCE_CUDA=${FORCE_CUDA:-} ARCH=${TORCH_CUDA_ARCH_LIST:-}") | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$VENV/bin/python" -c "import torch, codetr._C" 2>/dev/null; then
    exit 0
fi
rm -f "$STAMP"
echo "[build] compiling codetr._C (C++ CPU kernels$( [[ "${FORCE_CUDA:-0}" == 1 ]] && echo ' + CUDA'))"
if [[ -d /usr/local/cuda && -z "${CUDA_HOME:-}" ]]; then export CUDA_HOME=/usr/local/cuda; fi
MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import torch, codetr._C"
echo "$WANT" > "$STAMP"
