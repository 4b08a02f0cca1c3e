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
  local done_flag="$RUNS/$name/DONE"
  [ -f "$done_flag" ] && return 0
  if [ -f "$RUNS/$name/last.pt" ]; then
    # the same --set options again: --resume checks the config is unchanged
    local sets=() a
    for a in "$@"; do [[ $a == --init || $a == *.pt* ]] || sets+=("$a"); done
    $PY -m training.train --config "$CFG" --data-root "$DATA" --stage "$st" --out "$RUNS/$name" --resume "${sets[@]}"
  else
    $PY -m training.train --config "$CFG" --data-root "$DATA" --stage "$st" --out "$RUNS/$name" "$@"
  fi
  touch "$done_flag"
}

# stage 1: pretrain M_S and M_T independently
run spatial spatial
run temporal temporal
# ... then a second cosine cycle on M_T at half the learning rate (val 29.98 -> 30.27)
run temporal_ft temporal --init "$RUNS/temporal/best.pt:temporal" \
  --set stages.temporal.lr=1e-4 --set stages.temporal.iters=6000 --set train.val_every=1000
# stage 2: freeze M_S, M_T; train F and R on L_F + L_R
run fusion fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal_ft/best.pt:temporal"
# stage 3: fine-tune everything on all six losses
run joint joint --init "$RUNS/fusion/best.pt"
$PY -m training.export "$RUNS/fusion/best.pt" "$RUNS/joint/best.pt" models/dsfn_default.safetensors
