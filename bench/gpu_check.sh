#!/usr/bin/env bash
# The whole system once on a GPU, with timings: the check behind bench/results/<date>-<gpu>.md.
#
#   OUT=gpu_out bash bench/gpu_check.sh          # on the GPU machine (about 7 minutes on an H200)
#   TINY=1 OUT=/tmp/gc bash bench/gpu_check.sh   # the same steps at toy sizes (CPU: tests the script)
#
# Steps: versions -> synthetic corpus -> features (all cores) -> train.py prototypical + GC at the
# paper's width and episode (fp32 with and without cuDNN autotuning, bf16 --amp, torchrun with one
# process: NCCL + DDP + SyncBatchNorm) -> bench/run.py GPU rows -> EER_full / EER_short /
# identification on the GPU, EER_full again on the CPU (score files compared) -> export.py (ONNX
# compared with PyTorch). Every step is logged with its exit code and seconds; a failing step does
# not stop the later ones. bench/gpu_summary.py turns $OUT into the markdown table.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_steps.sh   # run_folders PREFIX; step NAME TIMEOUT_S command...
run_folders meta_sr_gpu
if [ "${TINY:-0}" = 1 ]; then
  SPEAKERS=12; UTTS=8; TEST_SPEAKERS=6; WAY=4; EPISODES=3; EPOCHS=2; CHANNELS=4; WORKERS=2
  BENCH="--quick"; ID_WAY=4; ID_EPISODES=5
else
  SPEAKERS=200; UTTS=20; TEST_SPEAKERS=40; WAY=100; EPISODES=${EPISODES:-100}; EPOCHS=${EPOCHS:-2}
  CHANNELS=32; WORKERS=8; BENCH="--repeats 3"; ID_WAY=40; ID_EPISODES=300
fi

DEADLINE=$(( $(date +%s) + ${BUDGET_S:-480} ))   # steps are cut short so that the summary still runs
STEP_LOGS=$WORK; STEP_MIN_S=20; STEP_TAIL=25

: > "$OUT/steps.tsv"
{ nvidia-smi || true; $PY -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"; nproc; } > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"
( while sleep 0.5; do nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || break; done ) > "$OUT/gpu_samples.csv" &
SAMPLER=$!

step corpus 120 $PY dataprep.py --synthetic --save_path "$DATA" --n_speakers $SPEAKERS --n_test_speakers $TEST_SPEAKERS \
  --utterances_per_speaker $UTTS --workers "$(nproc)"
step features 120 $PY feat_extract/feature_extraction.py --save_path "$DATA" --workers "$(nproc)"

TRAIN=(train.py --loss_type prototypical --use_GC True --n_shot 1 --n_query 2 --use_variable True
       --nb_class_train $WAY --data_type vox1 --save_path "$DATA" --model_dir "$MODELS" --channels $CHANNELS
       --n_episode $EPISODES --max_epoch $EPOCHS --workers $WORKERS --lr 0.1)
# most important first: the bf16 run whose checkpoint the evaluation uses
step train_amp 150 $PY "${TRAIN[@]}" --n_folder 3 --cudnn_benchmark False --amp

CP=$MODELS/baseline_003/checkpoint_$(printf %03d $EPOCHS).pth
EVAL=(--checkpoint "$CP" --save_path "$DATA" --data_type vox1)
step eer_full_gpu 90 $PY EER_full.py "${EVAL[@]}" --trials "$DATA/voxceleb1/test/veri_test.txt" --out_dir "$WORK/eval_gpu"
step eer_full_cpu 150 $PY EER_full.py "${EVAL[@]}" --trials "$DATA/voxceleb1/test/veri_test.txt" --out_dir "$WORK/eval_cpu" --use_cuda False
step eer_short_gpu 90 $PY EER_short.py "${EVAL[@]}" --test_length 100 200 500 --out_dir "$WORK/eval_gpu"
step identification_gpu 90 $PY identification.py "${EVAL[@]}" --nb_class_test $ID_WAY --nb_episode $ID_EPISODES \
  --out_dir "$WORK/eval_gpu"
step export 120 $PY export.py --checkpoint "$CP" --out "$WORK/export"
step equivalence 90 $PY bench/gpu_equivalence.py --checkpoint "$CP" --onnx "$WORK/export/encoder.onnx" \
  --json "$WORK/equivalence.json"
step train_torchrun 120 $PY -m torch.distributed.run --nproc_per_node 1 "${TRAIN[@]}" --n_folder 4 \
  --cudnn_benchmark False --amp --sync_bn --max_epoch 1
step bench_training 150 $PY bench/run.py $BENCH --only flops training --workers $WORKERS \
  --json "$WORK/bench_training.json" --markdown "$OUT/bench_training.md"
step bench_eval 150 $PY bench/run.py $BENCH --only eer_short episodes --workers $WORKERS \
  --json "$WORK/bench_eval.json" --markdown "$OUT/bench_eval.md"
step train_fp32 150 $PY "${TRAIN[@]}" --n_folder 2 --cudnn_benchmark False
step train_fp32_autotune 150 $PY "${TRAIN[@]}" --n_folder 1 --cudnn_benchmark True

kill $SAMPLER 2>/dev/null

# what comes back: the step logs, train logs and evaluation results in one archive, plus the summary
for run in 1 2 3 4; do cp "$MODELS/baseline_00$run/train_log.csv" "$WORK/train_log_$run.csv" 2>/dev/null; done
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.pth' --exclude='*.npy' --exclude='*.wav' --exclude=data \
  --exclude=saved_model . 2>/dev/null
$PY bench/gpu_summary.py --out "$OUT" --work "$WORK" --way $WAY --markdown "$OUT/summary.md"
