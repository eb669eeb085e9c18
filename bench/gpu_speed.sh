#!/usr/bin/env bash
# Every issue-23 lever on one GPU in one run (at most BUDGET_S=450 s + the summary on an H100/H200): writes
# $OUT/<date>-<card>-speed.json and .md (copy them to bench/results/), plus the step logs.
#
#   OUT=out bash bench/gpu_speed.sh                # on the GPU machine
#   TINY=1 OUT=/tmp/gs bash bench/gpu_speed.sh     # toy sizes on the CPU: tests the script (tests/test_bench.py)
#
# Steps: versions -> synthetic corpus -> features -> levers (bench/gpu_speed.py: each lever's step rate
# and MFU on the same pinned episodes; writes the fastest flags) -> train.py bf16 with the fastest
# flags -> the original's data path + step -> EER_short per --eval_precision against the original's
# per-trial strategy -> exit probe (seconds after the last epoch with many persistent pinned workers)
# -> train.py fp32 -> torchrun with one process (fastest flags without CUDA graphs) -> plain train.py
# with the torchrun flags (when they differ) -> torchrun + --sync_bn -> summary. A failing step does
# not stop the later ones; steps are cut to what is left of BUDGET_S, the last ones skipped first.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_steps.sh   # run_folders PREFIX; step NAME TIMEOUT_S command...
run_folders meta_sr_speed
if [ "${TINY:-0}" = 1 ]; then
  SPEAKERS=12; UTTS=8; TEST_SPEAKERS=6; WAY=4; CHANNELS=4; EPISODES=3; EPOCHS=1; WORKERS=0; PROBE_WORKERS=2
  LEVER_EPISODES=2; PASSES=1; LEVER_FLAGS="--levers eager_fp32 eager_bf16 fused_sgd_bf16 sync_every_step_bf16"
  ORIGINAL_STEPS=1; PROBE_EPISODES=2; EER_FLAGS="--quick --repeats 1"
  export OMP_NUM_THREADS=1   # tiny models on a shared CPU: threads only contend
else
  SPEAKERS=200; UTTS=20; TEST_SPEAKERS=40; WAY=100; CHANNELS=32; EPISODES=${EPISODES:-120}; EPOCHS=${EPOCHS:-3}
  WORKERS=10; PROBE_WORKERS=12; PROBE_EPISODES=10; LEVER_EPISODES=20; PASSES=2; LEVER_FLAGS="--budget_s ${LEVER_BUDGET_S:-140}"
  ORIGINAL_STEPS=20; EER_FLAGS="--repeats 3"
fi

DEADLINE=$(( $(date +%s) + ${BUDGET_S:-450} ))   # steps are cut short so that the summary still runs
STEP_LOGS=$WORK; STEP_MIN_S=10; STEP_TAIL=15

: > "$OUT/steps.tsv"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  nproc; } > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

step corpus 90 $PY dataprep.py --synthetic --save_path "$DATA" --n_speakers $SPEAKERS --n_test_speakers $TEST_SPEAKERS \
  --utterances_per_speaker $UTTS --workers "$(nproc)"
step features 90 $PY feat_extract/feature_extraction.py --save_path "$DATA" --workers "$(nproc)"
# shellcheck disable=SC2086
step levers 200 $PY bench/gpu_speed.py levers --save_path "$DATA" --way $WAY --channels $CHANNELS \
  --episodes $LEVER_EPISODES --passes $PASSES $LEVER_FLAGS --json "$WORK/levers.json"
flags() { cat "$WORK/best_$1.flags" 2>/dev/null || echo "$2"; }

TRAIN=(train.py --loss_type prototypical --use_GC True --n_shot 1 --n_query 2 --use_variable True
       --nb_class_train $WAY --data_type vox1 --save_path "$DATA" --model_dir "$MODELS" --channels $CHANNELS
       --n_episode $EPISODES --max_epoch $EPOCHS --workers $WORKERS --lr 0.1 --cudnn_benchmark False)
# shellcheck disable=SC2046
step train_bf16 120 $PY "${TRAIN[@]}" --n_folder 1 $(flags bf16 --amp)
step original 45 $PY bench/gpu_speed.py original --way $WAY --channels $CHANNELS --steps $ORIGINAL_STEPS \
  --json "$WORK/original.json" --tmp_dir "$WORK"
# shellcheck disable=SC2086
step eer_short 60 $PY bench/gpu_speed.py eer_short $EER_FLAGS --json "$WORK/eer_short.json" --tmp_dir "$WORK"
step exit_probe 45 $PY bench/gpu_speed.py exit_probe --json "$WORK/exit.json" -- "${TRAIN[@]}" --n_folder 5 \
  --max_epoch 1 --n_episode $PROBE_EPISODES --workers $PROBE_WORKERS
# shellcheck disable=SC2046
step train_fp32 90 $PY "${TRAIN[@]}" --n_folder 2 $(flags fp32 "")
# shellcheck disable=SC2046
step train_torchrun 90 $PY -m torch.distributed.run --nproc_per_node 1 "${TRAIN[@]}" --n_folder 3 $(flags ddp --amp)
if [ "$(flags bf16 --amp)" != "$(flags ddp --amp)" ]; then   # torchrun's flags in a plain run: the DDP cost alone
  # shellcheck disable=SC2046
  step train_plain_ddp_flags 80 $PY "${TRAIN[@]}" --n_folder 4 $(flags ddp --amp)
fi
# shellcheck disable=SC2046
step train_torchrun_sync_bn 80 $PY -m torch.distributed.run --nproc_per_node 1 "${TRAIN[@]}" --n_folder 6 \
  $(flags ddp --amp) --sync_bn   # SyncBatchNorm's cost (with one process its statistics are local)

tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.pth' --exclude='*.npy' --exclude='*.wav' --exclude=data \
  --exclude='*_store' . 2>/dev/null
$PY bench/gpu_speed.py summary --out "$OUT" --work "$WORK" --models "$MODELS"
