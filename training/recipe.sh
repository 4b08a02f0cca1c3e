#!/usr/bin/env bash
# The three-stage recipe that produced models/dsfn_default.safetensors (2 CPU cores).
# The shipped file is the better validated of stage 2 and stage 3 (export picks it).
# Usage: training/recipe.sh DATA_ROOT RUNS_DIR
# Every stage resumes if its run folder already has last.pt, so the script can be
# re-run after an interruption and continues where it stopped.
set -euo pipefail
DATA=${1:?usage: recipe.sh DATA_ROOT RUNS_DIR}
RUNS=${2:?usage: recipe.sh DATA_ROOT RUNS_DIR}
PY=${PYTHON:-python}
CFG=${CONFIG:-training/configs/cpu.toml}
cd "$(dirname "$0")/.."

run() {  # run RUN_NAME STAGE [--init/--set ...]: one training run in $RUNS/RUN_NAME
  local name=$1 st=$2; shift 2
  [ -f "$RUNS/$name/DONE" ] && return 0
  # an interrupted run resumes with the same options (train ignores --init on --resume
  # and checks that the --set options are unchanged)
  local resume=()
  [ -f "$RUNS/$name/last.pt" ] && resume=(--resume)
  $PY -m training.train --config "$CFG" --data-root "$DATA" --stage "$st" --out "$RUNS/$name" "${resume[@]}" "$@"
  touch "$RUNS/$name/DONE"
}

# stage 1: pretrain M_S and M_T independently
run spatial spatial
run temporal temporal
# ... then a second cosine cycle on M_T at half the learning rate (crop-val 29.98 -> 30.48)
run temporal_ft temporal --init "$RUNS/temporal/best.pt:temporal" \
  --set stages.temporal.lr=1e-4 --set stages.temporal.iters=6000 --set train.val_every=1000
# ... and a third, shorter one at lr 7e-5 (crop-val 30.48 -> 30.68)
run temporal_ft2 temporal --init "$RUNS/temporal_ft/best.pt:temporal" \
  --set stages.temporal.lr=7e-5 --set stages.temporal.iters=4000 --set train.val_every=1000
# ... and a fourth at lr 5e-5 with synthetic shifts up to 64 px (crop-val 30.68 -> 30.74,
# low-res 29.41 -> 29.48)
run temporal_ft3 temporal --init "$RUNS/temporal_ft2/best.pt:temporal" \
  --set stages.temporal.lr=5e-5 --set stages.temporal.iters=4000 --set train.val_every=1000 \
  --set data.synthetic_max_shift=64.0
# ... and a fifth at lr 4e-5 (crop-val 30.74 -> 30.79, low-res 29.48 -> 29.54)
run temporal_ft4 temporal --init "$RUNS/temporal_ft3/best.pt:temporal" \
  --set stages.temporal.lr=4e-5 --set stages.temporal.iters=4000 --set train.val_every=1000 \
  --set data.synthetic_max_shift=64.0
# ... a sixth and seventh at crop 320 (1 thread each; crop-val 30.79 -> 30.82 -> 30.89,
# low-res 29.54 -> 29.58 -> 29.61)
CROP320=(--set stages.temporal.crop=320 --set data.synthetic_max_shift=64.0)
run temporal_ft5 temporal --init "$RUNS/temporal_ft4/best.pt:temporal" "${CROP320[@]}" \
  --set stages.temporal.lr=4e-5 --set stages.temporal.iters=3000 --set train.val_every=1000
run temporal_ft6 temporal --init "$RUNS/temporal_ft5/best.pt:temporal" "${CROP320[@]}" \
  --set stages.temporal.lr=3e-5 --set stages.temporal.iters=3500 --set train.val_every=500
# ... then two cycles at batch 16 that ran on one GPU (an H100: 2,500 steps in 4.5 min
# with 15 worker processes, then 1,200; crop-val 30.89 -> 30.96 -> 31.00, low-res
# 29.61 -> 29.67 -> 29.70). They read a re-encoded copy of the data (see the model card).
GPU=(--set stages.temporal.batch=16 --set train.workers=15 --set train.amp=false --set train.val_every=500)
run temporal_ft7 temporal --init "$RUNS/temporal_ft6/best.pt:temporal" "${CROP320[@]}" "${GPU[@]}" \
  --set stages.temporal.lr=6e-5 --set stages.temporal.iters=2500
run temporal_ft8 temporal --init "$RUNS/temporal_ft7/best.pt:temporal" "${CROP320[@]}" "${GPU[@]}" \
  --set stages.temporal.lr=3e-5 --set stages.temporal.iters=1200
# ... and a tenth on the H100 (session 11: 2,800 steps in 4.8 min; crop-val on the packed
# copy 31.01 at step 500 -> 31.03). Such a copy is what `python -m training.pack` writes (see
# training/README.md); train there with --config PACK/config.toml --data-root PACK.
run temporal_ft9 temporal --init "$RUNS/temporal_ft8/best.pt:temporal" "${CROP320[@]}" "${GPU[@]}" \
  --set stages.temporal.lr=4e-5 --set stages.temporal.iters=2800
# stage 2: freeze M_S, M_T; train F and R on L_F + L_R. A first cycle with the former
# plain R (H_F only) ...
PLAIN_R=(--set model.refine_context=false)
run fusion fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal_ft4/best.pt:temporal" "${PLAIN_R[@]}"
# ... then a second cycle that keeps F and starts a new R that also sees both streams
# and M_S(L±) (full split: F 29.53 -> 29.58, R 29.53 -> 29.61)
run fusion2 fusion --init "$RUNS/fusion/best.pt:spatial,temporal,fusion"
# ... a third that continues F and R at half the lr (full split: R 29.61 -> 29.65) ...
run fusion3 fusion --init "$RUNS/fusion2/best.pt" --set stages.fusion.lr=1e-3
# ... a fourth that continues them beside the newer M_T (temporal_ft8; R 29.75) ...
run fusion4 fusion --init "$RUNS/fusion3/best.pt:spatial,fusion,refine" --init "$RUNS/temporal_ft8/best.pt:temporal" \
  --set stages.fusion.lr=1e-3
# ... and a fifth at lr 5e-4 (R 29.77)
run fusion5 fusion --init "$RUNS/fusion4/best.pt" --set stages.fusion.lr=5e-4
# ... and a sixth beside the tenth M_T cycle, at lr 5e-4 (best at step 250; R 29.79)
run fusion6 fusion --init "$RUNS/fusion5/best.pt:spatial,fusion,refine" --init "$RUNS/temporal_ft9/best.pt:temporal" \
  --set stages.fusion.lr=5e-4
# ... then F and R re-trained for S->T at the full high-res size (st_scale 1.0, the
# paper's; +17% FLOPs): a seventh cycle at lr 1e-3 (R 29.87; an eighth at 5e-4 did not
# validate better: crop-val 29.574 vs 29.582)
ST1=(--set model.st_scale=1.0)
run fusion7 fusion --init "$RUNS/fusion6/best.pt" "${ST1[@]}" --set stages.fusion.lr=1e-3
# session 13: M_S continued on one H100 (a second cycle, 24,000 steps at batch 32 x 128^2,
# lr 1e-4, 7 data workers, 3 min) on a copy of the stills (`python -m training.pack` of a
# config with only data.sr_images/sr_val, --jpeg 95; the model card says so). Set5+Set14
# on that copy: 31.15 -> 31.31 dB (bicubic 30.14). A larger M_S (48 x 6, 113k parameters,
# `--set 'model.spatial_args={channels = 48, layers = 6}'`, from scratch at 5e-4, then 2e-4)
# reached 31.60 and R 30.04 on the validation split, but 3.8 s per 1080p frame on 2 CPU
# cores (the target is 3 s), so it is not the default: it ships as the "quality" file
# (QUALITY=1 below; models/dsfn_quality.md).
GPU_S=(--set stages.spatial.batch=32 --set stages.spatial.crop=128 --set train.amp=false --set train.threads=2)
run spatial2 spatial --init "$RUNS/spatial/best.pt:spatial" "${GPU_S[@]}" --set train.workers=7 \
  --set stages.spatial.lr=1e-4 --set stages.spatial.iters=24000 --set train.val_every=4000
# ... then F and R continued beside it (M_T unchanged, frozen): an eighth stage-2 cycle
run fusion8 fusion --init "$RUNS/fusion7/best.pt:temporal,fusion,refine" --init "$RUNS/spatial2/best.pt:spatial" \
  "${ST1[@]}" --set stages.fusion.lr=1e-3
# the one-mask ablation of stage 2 (the "F one-mask" row of the model card's table), the same five cycles
ONE=(--set model.fusion_masks=1)
run fusion1 fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal_ft4/best.pt:temporal" \
  "${ONE[@]}" "${PLAIN_R[@]}"
run fusion1b fusion --init "$RUNS/fusion1/best.pt:spatial,temporal,fusion" "${ONE[@]}"
run fusion1c fusion --init "$RUNS/fusion1b/best.pt" "${ONE[@]}" --set stages.fusion.lr=1e-3
run fusion1d fusion --init "$RUNS/fusion1c/best.pt:spatial,fusion,refine" --init "$RUNS/temporal_ft8/best.pt:temporal" \
  "${ONE[@]}" --set stages.fusion.lr=1e-3
run fusion1e fusion --init "$RUNS/fusion1d/best.pt" "${ONE[@]}" --set stages.fusion.lr=5e-4
# session 11 restarted the one-mask model on the tenth M_T cycle: F and R from scratch,
# two cycles on the H100 (packed copy, batch 16, 7 workers, ~15 it/s), then one on the
# CPU on the original data (R of the one-mask model 29.72)
GPU_F=(--set stages.fusion.batch=16 --set train.workers=7 --set train.amp=false --set train.val_every=500)
run fusion1f fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal_ft9/best.pt:temporal" \
  "${ONE[@]}" "${GPU_F[@]}" --set stages.fusion.iters=2000
run fusion1g fusion --init "$RUNS/fusion1f/best.pt" "${ONE[@]}" "${GPU_F[@]}" --set stages.fusion.lr=1e-3 \
  --set stages.fusion.iters=1500
run fusion1h fusion --init "$RUNS/fusion1g/best.pt" "${ONE[@]}" --set stages.fusion.lr=5e-4
run fusion1i fusion --init "$RUNS/fusion1h/best.pt" "${ONE[@]}" "${ST1[@]}" --set stages.fusion.lr=1e-3
run fusion1j fusion --init "$RUNS/fusion1i/best.pt" "${ONE[@]}" "${ST1[@]}" --set stages.fusion.lr=5e-4
run fusion1k fusion --init "$RUNS/fusion1j/best.pt:temporal,fusion,refine" --init "$RUNS/spatial2/best.pt:spatial" \
  "${ONE[@]}" "${ST1[@]}" --set stages.fusion.lr=1e-3
# stage 3: fine-tune everything on all six losses (tried on fusion7 and earlier cycles on the
# CPU, and on fusion8's file on one H100 in session 14 for up to 2,000 steps at batch 16-24:
# never validated better than stage 2)
run joint joint --init "$RUNS/fusion8/best.pt" "${ST1[@]}"
$PY -m training.export "$RUNS/fusion8/best.pt" "$RUNS/joint/best.pt" models/dsfn_default.safetensors
$PY -m training.export "$RUNS/fusion1k/best.pt" "$RUNS/one_mask.safetensors"
# the "quality" file (models/dsfn_quality.safetensors, `upscale(weights="quality")`): a
# 48 x 6 M_S from scratch (session 13, one H100: 24,000 + 22,000 steps, 6 min), then one
# stage-2 cycle beside the default's M_T on the CPU (18 min). Run with QUALITY=1.
if [ -n "${QUALITY:-}" ]; then
  Q=(--set 'model.spatial_args={channels = 48, layers = 6}')
  run spatial_q spatial "${Q[@]}" "${GPU_S[@]}" --set train.workers=7 \
    --set stages.spatial.lr=5e-4 --set stages.spatial.iters=24000 --set train.val_every=4000
  run spatial_q2 spatial --init "$RUNS/spatial_q/best.pt:spatial" "${Q[@]}" "${GPU_S[@]}" --set train.workers=7 \
    --set stages.spatial.lr=2e-4 --set stages.spatial.iters=22000 --set train.val_every=4000
  run fusion_q fusion --init "$RUNS/fusion7/best.pt:temporal,fusion,refine" --init "$RUNS/spatial_q2/best.pt:spatial" \
    "${Q[@]}" "${ST1[@]}" --set stages.fusion.lr=1e-3
  $PY -m training.export "$RUNS/fusion_q/best.pt" models/dsfn_quality.safetensors
fi
