#!/usr/bin/env bash
# Training from recordings on a GPU (issue 15): the same train.py epoch with crops cut from the stored
# features (the paper), from the recordings with the fbank computed on the fly, with augmentation
# (MUSAN-style noise/music/babble + RIRs, the synthetic set), with speed perturbation, and with the
# fbank computed on the GPU in the training step (--wav_fbank device); plus one
# short run under cProfile to see where train.py spends its time outside the epochs.
#
#   OUT=gpu_out bash bench/gpu_wav_check.sh          # on the GPU machine (about 5 minutes on an H200)
#   TINY=1 OUT=/tmp/gw bash bench/gpu_wav_check.sh   # toy sizes (CPU: tests the script)
#
# Each step is logged with its exit code and seconds in $OUT/steps.tsv; a failing step does not stop
# the later ones; bench/gpu_wav_summary.py turns $OUT into a markdown table.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_steps.sh   # run_folders PREFIX; step NAME TIMEOUT_S command...
run_folders meta_sr_gpu_wav
if [ "${TINY:-0}" = 1 ]; then
  SPEAKERS=12; UTTS=8; TEST_SPEAKERS=6; WAY=4; EPISODES=3; CHANNELS=4; WORKERS=2; PROFILE_EPISODES=2
else
  SPEAKERS=200; UTTS=20; TEST_SPEAKERS=40; WAY=100; EPISODES=${EPISODES:-60}; CHANNELS=32; WORKERS=${WORKERS:-12}
  PROFILE_EPISODES=5
fi
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-420} ))
STEP_LOGS=$OUT; STEP_MIN_S=15; STEP_TAIL=8

: > "$OUT/steps.tsv"
{ nvidia-smi -L || true; $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"; nproc; } > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

step corpus 120 $PY dataprep.py --synthetic --synthetic_augment --save_path "$DATA" --n_speakers $SPEAKERS \
  --n_test_speakers $TEST_SPEAKERS --utterances_per_speaker $UTTS --workers "$(nproc)"
step features 120 $PY feat_extract/feature_extraction.py --save_path "$DATA" --workers "$(nproc)"

TRAIN=(train.py --loss_type prototypical --use_GC True --n_shot 1 --n_query 2 --use_variable True
       --nb_class_train $WAY --data_type vox1 --save_path "$DATA" --model_dir "$MODELS" --channels $CHANNELS
       --n_episode $EPISODES --max_epoch 2 --workers $WORKERS --lr 0.1 --cudnn_benchmark False)
AUG=(--noise_dir "$DATA/augment/musan" --rir_dir "$DATA/augment/RIRS_NOISES/simulated_rirs")
step train_features 90 $PY "${TRAIN[@]}" --n_folder 1
step train_wav 90 $PY "${TRAIN[@]}" --n_folder 2 --input wav
# the fbank on the GPU inside the training step instead of in the DataLoader workers
step train_wav_device 90 $PY "${TRAIN[@]}" --n_folder 5 --input wav --wav_fbank device
step train_wav_augment 90 $PY "${TRAIN[@]}" --n_folder 3 --input wav --augment "${AUG[@]}"
step train_wav_augment_device 90 $PY "${TRAIN[@]}" --n_folder 6 --input wav --wav_fbank device --augment "${AUG[@]}"
step train_wav_augment_speed 90 $PY "${TRAIN[@]}" --n_folder 4 --input wav --augment "${AUG[@]}" --speed_perturb
# where the time outside the epochs goes (the H200 run of 2026-11-26 spent ~50 s there in fp32)
step profile 60 $PY -m cProfile -o "$OUT/train_profile.prof" "${TRAIN[@]}" --n_folder 9 --max_epoch 1 \
  --n_episode $PROFILE_EPISODES --workers 2
$PY -c "import pstats,sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(45)" \
  "$OUT/train_profile.prof" > "$OUT/train_profile.txt" 2>&1

for run in 1 2 3 4 5 6; do cp "$MODELS/baseline_00$run/train_log.csv" "$OUT/train_log_$run.csv" 2>/dev/null; done
$PY bench/gpu_wav_summary.py --out "$OUT" --way $WAY --markdown "$OUT/summary.md"
