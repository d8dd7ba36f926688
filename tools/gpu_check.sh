#!/usr/bin/env bash
# One prepared GPU check (issue 13), meant to finish within 8 minutes on one GPU:
#   1. build codetr._C with the CUDA kernels (in place, for the GPU present);
#   2. the CUDA tests of the op (tests/layers/test_ms_deform_attn_cuda.py);
#   3. the op benchmark (encoder / decoder / 800x1333 encoder shapes; time as a multiple of the
#      memory-bandwidth floor), tools/benchmark_ms_deform_attn.py;
#   4. a DINO-R50 training step (batch 2, 800x800, random weights): time and peak memory in
#      fp32 and bf16 autocast, tools/benchmark_model.py;
#   5. batch-1 inference at 800x1333: eager / torch.compile / ONNX Runtime CUDA (when the
#      onnxruntime-gpu provider is installed), tools/benchmark_export.py --device cuda.
# Every figure goes to one file, RESULTS (default $OUT/gpu_check.md, or benchmarks/gpu_check.md
# without $OUT); a step that fails or runs out of its time is recorded as such and the next one
# still runs. The step limits add up to 475 s (+ start-up), within the 8 minutes; the inference
# step prints each mode's figures as it finishes, so a timeout there keeps the modes before it.
# Usage, from the repository root:
#   PY=.venv/bin/python bash tools/gpu_check.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
RESULTS="${RESULTS:-${OUT:-$ROOT/benchmarks}/gpu_check.md}"
LOG="$(dirname "$RESULTS")/gpu_check.log"
export PYTHONPATH="$ROOT/projects${PYTHONPATH:+:$PYTHONPATH}"
CONFIG=configs/dino/dino_r50_4scale_12ep.py
START=$SECONDS

note() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

# run NAME SECONDS CMD...: the command's output goes to the log; its last lines (the tables)
# to RESULTS, with the exit status and the time taken.
run() {
    local name="$1" limit="$2"; shift 2
    local t0=$SECONDS rc
    echo "=== $name: $*" >>"$LOG"
    timeout --kill-after=10 "$limit" "$@" >"$LOG.step" 2>&1
    rc=$?
    cat "$LOG.step" >>"$LOG"
    note ""
    note "## $name (exit $rc$([[ $rc == 124 ]] && echo ": timed out after ${limit} s"), $((SECONDS - t0)) s)"
    note '```'
    note "\$ $*"
    tail -n 25 "$LOG.step" | tee -a "$RESULTS"
    note '```'
    return $rc
}

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
: >"$LOG"
note "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
note ""
note '```'
"$PY" - <<'EOF' 2>&1 | tee -a "$RESULTS"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "CUDA", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"sm_{p.major}{p.minor}")
else:
    print("no CUDA device visible")
try:
    import onnxruntime as ort
    print("onnxruntime", ort.__version__, ort.get_available_providers())
except ImportError:
    print("onnxruntime not installed")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$RESULTS"
note '```'

# 1. the CUDA build, for this GPU's architecture only (fast)
ARCH="$("$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.major}.{p.minor}")' 2>/dev/null)"
if [[ -d /usr/local/cuda && -z "${CUDA_HOME:-}" ]]; then export CUDA_HOME=/usr/local/cuda; fi
run "build codetr._C with CUDA (arch ${ARCH:-?})" 120 \
    env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${ARCH:-9.0}" MAX_JOBS="$(nproc)" "$PY" setup.py build_ext --inplace
run "CUDA build check" 20 "$PY" -c \
    "import torch; from codetr.layers.ms_deform_attn import cuda_kernels_available as c; assert c(), 'no CUDA kernels'; print('cuda kernels: yes')"

# 2. the CUDA tests of the op
run "CUDA tests" 50 "$PY" -m pytest -q -p no:cacheprovider tests/layers/test_ms_deform_attn_cuda.py

# 3. the op at the encoder / decoder / 800x1333 shapes, with the bandwidth-floor ratio
run "op benchmark fp32" 40 "$PY" tools/benchmark_ms_deform_attn.py --device cuda --repeats 10
run "op benchmark bf16" 25 "$PY" tools/benchmark_ms_deform_attn.py --device cuda --dtype bfloat16 --repeats 10 --skip-reference

# 4. DINO-R50 training step, fp32 and bf16 autocast (random weights: no download)
for amp in off bf16; do
    run "DINO-R50 training step, batch 2, 800x800, amp=$amp" 55 "$PY" tools/benchmark_model.py \
        --config-file "$CONFIG" --image-size 800 --batch-size 2 --device cuda --iters 5 --warmup 2 --amp "$amp" \
        train.init_checkpoint=""
done

# 5. batch-1 inference at 800x1333: eager, torch.compile, ONNX Runtime CUDA if installed
MODES="eager compile"
if "$PY" -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" 2>/dev/null; then
    MODES="$MODES onnxruntime"
else
    note ""
    note "(ONNX Runtime's CUDA provider is not installed (onnxruntime-gpu): no ONNX Runtime CUDA figure)"
fi
# shellcheck disable=SC2086
run "DINO-R50 inference, batch 1, 800x1333" 110 "$PY" tools/benchmark_export.py --config-file "$CONFIG" \
    --device cuda --image-size 800 1333 --iters 10 --modes $MODES

note ""
note "total $((SECONDS - START)) s; full log: $LOG"
