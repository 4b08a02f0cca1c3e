#!/usr/bin/env bash
# Measure vsdsfn on a CUDA GPU in one short run, from the repository root:
#
#     bash bench/gpu.sh                      # reports in bench/, also copied into $OUT when it is set
#     BUDGET_S=300 PYTHON=python3 bash bench/gpu.sh
#
# Installs nothing. Each step runs under `timeout`, within one overall budget (BUDGET_S seconds,
# default 470, so the script ends within 8 minutes); a step that fails or times out does not
# stop the next. Steps and what they write:
#   1. versions: Python, torch, CUDA, cuDNN, the device, VapourSynth (log only);
#   2. bench.profile_cuda at 1920x1080 -> 4K, fp16 and bf16, batch 1: bench/PROFILE.md,
#      bench/PROFILE_bf16.md, bench/traces/;
#   3. bench.engine_cuda at 960x540 and 1920x1080, fp32, fp16 and bf16, batch 1 and 4:
#      bench/CUDA.md, rows (path "engine") in bench/gpu.json;
#   4. bench.benchmark through VapourSynth on CUDA at 960x540 and 1920x1080, fp16 and bf16 (RGBH),
#      batch 1 and 4: bench/GPU_VS_b1.md, bench/GPU_VS_b4.md, rows (path "vapoursynth") in
#      bench/gpu.json; and tiled (upscale(tile=960), 1920x1080, fp16, batch 1):
#      bench/GPU_VS_TILED.md, bench/gpu_tiled.json (same schema; its own file, as rows are keyed
#      by input, output, precision, batch and path, not tile);
#   5. where torch-tensorrt imports: the same through TensorRT (upscale(trt=True), 1920x1080,
#      fp16, batch 1; the first run builds the engines): bench/GPU_VS_TRT.md, bench/gpu_trt.json.
# The json files start afresh; the log is bench/gpu_sh.log.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-470}
LOG=bench/gpu_sh.log
deadline=$((SECONDS + BUDGET_S))
status=0
: >"$LOG"
rm -f bench/gpu.json bench/gpu_tiled.json bench/gpu_trt.json

log() { echo "gpu.sh: $*" | tee -a "$LOG" >&2; }

save() {  # copy the reports written so far into $OUT (a later timeout keeps them)
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT/bench"
    local f
    for f in bench/PROFILE.md bench/PROFILE_bf16.md bench/CUDA.md bench/gpu.json bench/gpu_tiled.json bench/gpu_trt.json \
        bench/GPU_VS_*.md "$LOG"; do
        if [ -f "$f" ]; then cp "$f" "$OUT/bench/"; fi
    done
    if [ -d bench/traces ]; then cp -r bench/traces "$OUT/bench/"; fi
}

step() {  # step NAME SECONDS CMD...: CMD under timeout, within what is left of the budget
    local name=$1 limit=$2 left rc t0
    shift 2
    left=$((deadline - SECONDS))
    if [ "$left" -lt 20 ]; then
        log "$name: skipped (budget spent)"
        status=1
        return
    fi
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    log "$name: up to ${limit}s: $*"
    t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    log "$name: exit $rc after $((SECONDS - t0))s$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    if [ "$rc" -ne 0 ]; then status=1; fi
    save
}

step versions 60 "$PY" -c '
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "|", round(p.total_memory / 2**30), "GiB |", p.multi_processor_count, "SMs | capability",
          f"{p.major}.{p.minor}")
else:
    print("device: no CUDA device")
try:
    import vapoursynth as vs
    print("vapoursynth", vs.core.version().splitlines()[0])
except Exception as exc:
    print("vapoursynth: not available:", exc)
'
if command -v nvidia-smi >/dev/null; then
    step nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
fi

step profile 70 "$PY" -m bench.profile_cuda --size 1920x1080 --precision fp16 --batch 1 --pairs 4 \
    --out bench/PROFILE.md --trace bench/traces
step profile-bf16 40 "$PY" -m bench.profile_cuda --size 1920x1080 --precision bf16 --batch 1 --pairs 2 \
    --out bench/PROFILE_bf16.md

step engine 170 "$PY" -m bench.engine_cuda --sizes 960x540,1920x1080 --batches 1,4 --pairs 4 --runs 2 \
    --out bench/CUDA.md --json bench/gpu.json

if "$PY" -c "import vapoursynth" 2>/dev/null; then
    for b in 1 4; do
        step "vapoursynth-b$b" 70 "$PY" -m bench.benchmark --device cuda --methods dsfn --sizes 960x540,1920x1080 \
            --rgbh --precisions fp16,bf16 --batch-size "$b" --frames 8 --runs 2 --out "bench/GPU_VS_b$b.md" --json bench/gpu.json
    done
    step vapoursynth-tiled 50 "$PY" -m bench.benchmark --device cuda --methods dsfn --sizes 1920x1080 --rgbh \
        --precisions fp16 --batch-size 1 --tile 960 --frames 8 --runs 2 --out bench/GPU_VS_TILED.md --json bench/gpu_tiled.json
    if "$PY" -c "import torch_tensorrt" 2>/dev/null; then
        step vapoursynth-trt 150 "$PY" -m bench.benchmark --device cuda --methods dsfn --sizes 1920x1080 --rgbh \
            --precisions fp16 --batch-size 1 --trt --frames 8 --runs 2 --out bench/GPU_VS_TRT.md --json bench/gpu_trt.json
    else
        log "torch_tensorrt: not importable; the TensorRT step is skipped"
    fi
else
    log "vapoursynth: not importable; the VapourSynth steps are skipped"
    status=1
fi

log "done in ${SECONDS}s (exit $status)"
save
exit "$status"
