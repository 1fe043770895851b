#!/bin/bash
# GRPO reward comparison from ONE trained generator: exact-match reward vs the paper's reward with QARM, same
# checkpoint, seed and step budget, run side by side (1 thread each). Writes <out>/rl_<kind>/run/rl/metrics_test.json.
#   benchmarks/rl_rewards.sh runs/combos/beauty/text_only/seed42 <beauty evidence>/quality.safetensors /tmp/rl_cmp
# KINDS=qarm runs one of them; STEPS sets the budget (default 200).
# (QARM needs item quality q_i; a text-only run has none, so it is taken from an evidence run with a quality judge
# on the same catalog.)
set -euo pipefail
SRC=$(realpath "$1"); QUALITY=$(realpath "$2"); OUT=$(realpath -m "$3"); STEPS=${STEPS:-200}; KINDS=${KINDS:-"exact qarm"}
REPO=$(cd "$(dirname "$0")/.." && pwd)
one() {
  local kind=$1 run=$OUT/rl_$1/run extra=""
  rm -rf "$run" && mkdir -p "$run/generate/checkpoints"
  cp -r "$SRC/data" "$SRC/quantize" "$run/" && rm -rf "$run/quantize/checkpoints"
  cp "$SRC/generate/checkpoints/best.ckpt" "$run/generate/checkpoints/best.ckpt"
  [ "$kind" = qarm ] && extra="--model.quality_file $QUALITY"
  local common="-c configs/trainer/cpu.yaml -c configs/model/policy_$kind.yaml -c configs/data/sequences.yaml
    --data.run_dir $run --trainer.default_root_dir $run/rl --data.val_max_users 3000 --seed_everything 42
    --trainer.enable_progress_bar false $extra"
  (cd "$REPO" && OMP_NUM_THREADS=1 .venv/bin/python -m deepinterestgr.cli.main fit $common \
      --trainer.max_steps "$STEPS" --trainer.val_check_interval $((STEPS / 2)) \
   && OMP_NUM_THREADS=1 .venv/bin/python -m deepinterestgr.cli.main test $common --ckpt_path "$run/rl/checkpoints/best.ckpt") \
   > "$OUT/rl_$kind.log" 2>&1
}
mkdir -p "$OUT"
for kind in $KINDS; do one "$kind" & done
wait
for kind in $KINDS; do echo "== $kind"; cat "$OUT/rl_$kind/run/rl/metrics_test.json"; done
