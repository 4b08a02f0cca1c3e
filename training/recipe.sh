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

stage() {  # stage NAME [--init ...]
  local name=$1; shift
  local done_flag="$RUNS/$name/DONE"
  [ -f "$done_flag" ] && return 0
  if [ -f "$RUNS/$name/last.pt" ]; then
    $PY -m training.train --config "$CFG" --data-root "$DATA" --stage "$name" --out "$RUNS/$name" --resume
  else
    $PY -m training.train --config "$CFG" --data-root "$DATA" --stage "$name" --out "$RUNS/$name" "$@"
  fi
  touch "$done_flag"
}

# stage 1: pretrain M_S and M_T independently
stage spatial
stage temporal
# stage 2: freeze M_S, M_T; train F and R on L_F + L_R
stage fusion --init "$RUNS/spatial/best.pt:spatial" --init "$RUNS/temporal/best.pt:temporal"
# stage 3: fine-tune everything on all six losses
stage joint --init "$RUNS/fusion/best.pt"
$PY -m training.export "$RUNS/fusion/best.pt" "$RUNS/joint/best.pt" models/dsfn_default.safetensors
