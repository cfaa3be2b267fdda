#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run of under 8 minutes on one GPU; prints one table.
#
#   bash benchmarks/gpu_check.sh [WORK_FOLDER]          (default: a new temporary folder)
#
# 1. BEiT-Base, 512 x 512, K=5, bf16, batch 16: training steps/s, windows/s, peak GPU memory beside
#    the planner's memory estimate (benchmarks/train_step.py).
# 2. 30 steps of transseg_train on the example task under torchrun, one rank per visible GPU
#    (NCCL and SyncBatchNorm when there are 2 or more GPUs; one GPU trains as one process).
# 3. SIGTERM to that torchrun's whole process group half way, then --c: checkpoint_latest.pt must be
#    written at the interrupted step and the fold must finish.
# 4. transseg_predict on the example task's test cases.
# 5. transseg_predict end to end against the network alone (benchmarks/predict.py, ViT-Tiny, 4 cases).
# Without a CUDA GPU it stops at once with one line saying so and exit status 2: it never skips.
# GPU_CHECK_DEVICE=cpu runs the same plumbing on the CPU (ViT-Tiny, 2 gloo ranks) to test the script.
set -uo pipefail

fail() { echo "gpu_check: $*" >&2; exit 2; }

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  python3 - <<'EOF' || fail "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); run this on a machine with one."
import sys
import torch
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
  GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
  STEP_ARGS=(--device cuda --backbone beit_base_patch16_224 --resolution 512 --batch 16 --steps 10)
  PLAN_ARGS=(--no_pretrained)
  NAME=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))")
else
  GPUS=2
  STEP_ARGS=(--device cpu --steps 3)
  PLAN_ARGS=(--no_pretrained --backbone vit_tiny_patch16_224 --min_resolution 64)
  NAME="CPU dry run (plumbing only, no GPU figures)"
fi

WORK=${1:-$(mktemp -d -t transseg_gpu_check.XXXXXX)}
mkdir -p "$WORK"
export TRANSSEG_raw="$WORK/raw" TRANSSEG_preprocessed="$WORK/preprocessed" TRANSSEG_results="$WORK/results"
LOG="$WORK/gpu_check.log"
declare -a ROWS
row() { ROWS+=("$(printf '%-44s | %s' "$1" "$2")"); }
START=$(date +%s)

# 1. the network's training step at the paper's size
STEP=$(python3 benchmarks/train_step.py "${STEP_ARGS[@]}" 2>>"$LOG") || fail "benchmarks/train_step.py failed; see $LOG"
echo "$STEP" >>"$LOG"
row "step: $(echo "$STEP" | sed -n 1p | cut -d, -f1,2,4)" "$(echo "$STEP" | sed -n 2p)"
row "  peak memory (GPU: and the planner's estimate)" "$(echo "$STEP" | sed -n 3p)"

# 2. 30 steps under torchrun (NCCL, SyncBatchNorm with >= 2 GPUs)
transseg_example --raw_root "$WORK/raw" >>"$LOG" 2>&1 || fail "transseg_example failed; see $LOG"
transseg_plan_and_preprocess -d 99 -np 2 "${PLAN_ARGS[@]}" >>"$LOG" 2>&1 || fail "transseg_plan_and_preprocess failed; see $LOG"
TRAIN=(-m transseg.cli.train 99 0 --device "$DEVICE" --steps 30 --val_every 10 --save_every 1000 --batch_size 16)
t0=$(date +%s)
torchrun --standalone --nproc_per_node "$GPUS" "${TRAIN[@]}" >>"$LOG" 2>&1 || fail "torchrun training failed; see $LOG"
FOLD="$TRANSSEG_results/Dataset099_Example/plans/fold_0"
row "transseg_train, 30 steps, torchrun x $GPUS" "$(( $(date +%s) - t0 )) s; $(python3 -c "
import json; r = json.load(open('$FOLD/run.json')); s = json.load(open('$FOLD/validation/summary.json'))
print(f\"world size {r['world_size']}, per-GPU batch {r['per_gpu_batch']}, validation Dice {s['foreground_mean']['dice']:.3f}\")")"

# 3. SIGTERM to the process group half way, then --c
rm -rf "$FOLD"
setsid torchrun --standalone --nproc_per_node "$GPUS" "${TRAIN[@]}" >>"$LOG" 2>&1 &
LEADER=$!
for _ in $(seq 600); do
  [ -f "$FOLD/metrics.jsonl" ] && [ "$(wc -l <"$FOLD/metrics.jsonl")" -ge 12 ] && break
  kill -0 "$LEADER" 2>/dev/null || break
  sleep 0.2
done
kill -TERM -- "-$LEADER" 2>/dev/null || fail "the run ended before SIGTERM could be sent; see $LOG"
wait "$LEADER"
SAVED=$(python3 -c "from transseg.checkpoint import load_checkpoint; print(load_checkpoint('$FOLD/checkpoint_latest.pt')['step'])" \
        2>>"$LOG") || fail "no checkpoint_latest.pt after SIGTERM to the group; see $LOG"
LOGGED=$(tail -n 1 "$FOLD/metrics.jsonl" | python3 -c "import json, sys; print(json.loads(sys.stdin.read())['step'])")
torchrun --standalone --nproc_per_node "$GPUS" "${TRAIN[@]}" --c >>"$LOG" 2>&1 || fail "--c after SIGTERM failed; see $LOG"
FINAL=$(python3 -c "from transseg.checkpoint import load_checkpoint; print(load_checkpoint('$FOLD/checkpoint_final.pt')['step'])")
[ "$SAVED" = "$LOGGED" ] || fail "SIGTERM: checkpoint_latest.pt at step $SAVED, but the log reached step $LOGGED"
row "SIGTERM to the group, then --c" "latest saved at step $SAVED (the step logged), --c finished at step $FINAL"

# 4. prediction of the test cases
t0=$(date +%s)
transseg_predict -i "$(ls -d "$TRANSSEG_raw"/*Example)/imagesTs" -o "$WORK/predictions" -d 99 -f 0 --device "$DEVICE" \
  >>"$LOG" 2>&1 || fail "transseg_predict failed; see $LOG"
row "transseg_predict, example test cases" "$(( $(date +%s) - t0 )) s, $(ls "$WORK/predictions" | grep -c '\.nii') files"

# 5. prediction end to end against the network alone: does the GPU wait for the CPU?
if [ "$DEVICE" = cuda ]; then BENCH=(--device cuda --cases 4 --repeat 1); else BENCH=(--device cpu --cases 2 --size 64 64 --slices 20 24 --repeat 1); fi
PRED=$(python3 benchmarks/predict.py "${BENCH[@]}" --workdir "$WORK/predict_bench" 2>>"$LOG") || fail "benchmarks/predict.py failed; see $LOG"
echo "$PRED" >>"$LOG"
row "transseg_predict vs the network alone" "$(echo "$PRED" | grep -m1 '^transseg_predict' | sed -E 's/.*median ([0-9.]+ s) .* = ([0-9.]+x the model).*/\1 = \2/')"

echo
printf '%s\n' "TransSeg GPU check: $NAME, torch $(python3 -c "import torch; print(torch.__version__)"), $GPUS rank(s), $(( $(date +%s) - START )) s"
printf '%-44s | %s\n' "check" "result"
printf '%s\n' "---------------------------------------------+------------------------------------------------------------"
printf '%s\n' "${ROWS[@]}"
echo "(log: $LOG)"
