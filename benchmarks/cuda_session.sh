#!/usr/bin/env bash
# Every GPU check of the project in one run, for a lent CUDA machine (see DEVELOPERS.md, `device`):
# the CUDA tests; two back-to-back torch fp32 profiles at 768x1536 (time and repeatability); an
# fp16 profile; each profile calibrated on 12 random networks (`casprof calibrate --seed 1`, which
# refuses with exit 1 and writes nothing when the machine's speed moved by more than 20 % since the
# profile) and then checked by `benchmarks/fidelity_cpu.py` (30 random genotypes, seed 0, plus the
# extremes; the report also scores the profile without its offset); `cas deploy bench` of the reference
# genotype (seed 0) with torch on the GPU in fp32 and fp16, and in fp16 with channels_last; the whole test suite.
#
#   [ONLY="step ..."] bash benchmarks/cuda_session.sh [BUDGET_SECONDS] [LOG_DIR]
#
# Steps run in the order below, each under `timeout`, and a step is skipped when less than its
# minimum remains of the budget (default 480 s), so the run always ends on time and keeps what
# finished. ONLY runs the named steps alone (measure_fp32, a single fp32 profile, runs only where
# profile_fp32 made none, e.g. ONLY="measure_fp32 calibrate_fp32 fidelity_fp32"). Results go where the CPU benchmarks put theirs
# (benchmarks/results/, profiles/); each step's output goes to LOG_DIR (default
# runs/cuda-session/). Nothing falls back to the CPU: a step that cannot run on the GPU fails.
# The test steps need the package installed (`pip install --no-build-isolation --no-deps -e .`
# where nothing can be downloaded): some tests run the `casprof` console script.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-480}
LOGS=${2:-runs/cuda-session}
mkdir -p "$LOGS" benchmarks/results profiles
END=$((SECONDS + BUDGET))
export PYTHONUNBUFFERED=1

# step NAME MIN_SECONDS MAX_SECONDS COMMAND...: run COMMAND if MIN_SECONDS remain, for at most
# MAX_SECONDS (and never past the budget); its output goes to LOGS/NAME.log; prints one status line.
step() {
    local name=$1 min=$2 max=$3; shift 3
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 1; fi
    local left=$((END - SECONDS))
    if ((left < min)); then
        echo "[skip] $name: ${left}s of the budget left, needs ${min}s" | tee -a "$LOGS/summary.txt"
        return 1
    fi
    local limit=$((max < left ? max : left)) start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "[rc=$rc] $name: $((SECONDS - start))s (limit ${limit}s)" | tee -a "$LOGS/summary.txt"
    return $rc
}

python3 -m casprof devices >"$LOGS/devices.log" 2>&1 || { cat "$LOGS/devices.log"; exit 1; }
# the first named CUDA registry device present (else the generic "cuda") and the hardware digest, in one start-up
read -r DEV DIGEST < <(python3 -c "
from casprof.devices import DeviceKind, devices_present
from casprof.hardware import detect_hardware
hw = detect_hardware()
named = [d.name for d in devices_present(hw) if d.kind is DeviceKind.CUDA and not d.is_generic]
print(named[0] if named else 'cuda', hw.digest())")
echo "device $DEV, hardware $DIGEST" | tee "$LOGS/summary.txt"
python3 -m pip list 2>/dev/null | grep -i -E "^(torch|onnx|onnxruntime|numpy|typer|rich|pandas|fvcore) " >>"$LOGS/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv >>"$LOGS/summary.txt" 2>&1

FP32="profiles/$DEV-${DIGEST:0:8}-torch-fp32-768x1536.json"
FP16="profiles/$DEV-${DIGEST:0:8}-torch-fp16-768x1536.json"
step tests_cuda 60 120 python3 -m pytest -q -m cuda -p no:cacheprovider
step profile_fp32 120 240 python3 benchmarks/profile_cpu.py --device "$DEV" --backend torch --precision fp32 --keep-dir profiles
[ -f "$FP32" ] || step measure_fp32 60 120 python3 -m casprof measure --device "$DEV" --backend torch --precision fp32 --out "$FP32"
[ -f "$FP32" ] && step calibrate_fp32 30 90 python3 -m casprof calibrate --profile "$FP32" --networks 12 --seed 1
[ -f "$FP32" ] && step fidelity_fp32 90 180 python3 benchmarks/fidelity_cpu.py --profile "$FP32" --tag calibrated
step profile_fp16 60 150 python3 -m casprof measure --device "$DEV" --backend torch --precision fp16 --out "$FP16"
[ -f "$FP16" ] && step calibrate_fp16 30 90 python3 -m casprof calibrate --profile "$FP16" --networks 12 --seed 1
[ -f "$FP16" ] && step fidelity_fp16 90 180 python3 benchmarks/fidelity_cpu.py --profile "$FP16" --tag calibrated
python3 -m casprof genotype --random --seed 0 --out "$LOGS/genotype-seed0.json" >/dev/null 2>&1
for p in fp32 fp16; do
    step "deploy_$p" 30 60 python3 -m cas deploy bench -g "$LOGS/genotype-seed0.json" --backend torch --device cuda:0 \
        --precision $p --report "benchmarks/results/deploy_${DEV}_torch_${p}_$DIGEST.json"
done
# the same in cuDNN's NHWC layout (`--memory-format channels_last`), where fp16 convolutions run on tensor cores
step deploy_fp16_channels_last 30 60 python3 -m cas deploy bench -g "$LOGS/genotype-seed0.json" --backend torch --device cuda:0 \
    --precision fp16 --memory-format channels_last --report "benchmarks/results/deploy_${DEV}_torch_fp16_channels-last_$DIGEST.json"
step tests_all 90 200 python3 -m pytest -q -x -n 8 -p no:cacheprovider
cat "$LOGS/summary.txt"
