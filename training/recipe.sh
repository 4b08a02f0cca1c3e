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
# stage 2: freeze M_S, M_T; train F and R on L_F + L_R. A first cycle with the former
# plain R (H_F only) ...
PLAIN_R=(--set model.refine_context=false)
run fusion fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal_ft4/best.pt:temporal" "${PLAIN_R[@]}"
# ... then a second cycle that keeps F and starts a new R that also sees both streams
# and M_S(L±) (full split: F 29.53 -> 29.58, R 29.53 -> 29.61)
run fusion2 fusion --init "$RUNS/fusion/best.pt:spatial,temporal,fusion"
# the one-mask ablation of stage 2 (the "F one-mask" row of the model card's table), the same two cycles
run fusion1 fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal_ft4/best.pt:temporal" \
  --set model.fusion_masks=1 "${PLAIN_R[@]}"
run fusion1b fusion --init "$RUNS/fusion1/best.pt:spatial,temporal,fusion" --set model.fusion_masks=1
# stage 3: fine-tune everything on all six losses
run joint joint --init "$RUNS/fusion2/best.pt"
$PY -m training.export "$RUNS/fusion2/best.pt" "$RUNS/joint/best.pt" models/dsfn_default.safetensors
$PY -m training.export "$RUNS/fusion1b/best.pt" "$RUNS/one_mask.safetensors"
