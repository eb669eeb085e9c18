#!/usr/bin/env bash
# Where train.py's time outside its epochs goes on a GPU machine (bench/gpu_wav_check.sh saw ~70 s in 5 of
# 6 runs with 12 DataLoader workers, 9.5 s in one): the same short run with 12 and with 2 workers, each
# timed from the shell, the 12-worker one under cProfile with timestamps printed around the loop.
#   OUT=out bash bench/gpu_exit_probe.sh            (TINY=1 for toy sizes on a CPU; ONLY=workers12: one run)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}; OUT=${OUT:?}; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/meta_sr_exit_XXXX); DATA=$WORK/data
if [ "${TINY:-0}" = 1 ]; then S=12; U=8; T=6; WAY=4; CH=4; else S=200; U=20; T=40; WAY=100; CH=32; fi
$PY dataprep.py --synthetic --save_path "$DATA" --n_speakers $S --n_test_speakers $T --utterances_per_speaker $U \
  --workers "$(nproc)" > /dev/null 2>&1
$PY feat_extract/feature_extraction.py --save_path "$DATA" --workers "$(nproc)" > /dev/null 2>&1
TRAIN=(train.py --nb_class_train $WAY --data_type vox1 --save_path "$DATA" --model_dir "$WORK/m" --channels $CH
       --n_episode 10 --max_epoch 1 --cudnn_benchmark False)
run() {  # run NAME args...: wall seconds of a whole train.py process, stamped lines of its output
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [ "$name" != "$ONLY" ]; then return; fi
  local t0=$EPOCHREALTIME
  timeout 100 "$@" 2>&1 | stdbuf -oL tr '\r' '\n' | grep --line-buffered -v "epoch 1:" | while IFS= read -r line; do
    awk -v now="$EPOCHREALTIME" -v t0="$t0" -v line="$line" 'BEGIN{printf "%7.2f %s\n", now - t0, line}'
  done > "$OUT/$name.log"
  awk -v now="$EPOCHREALTIME" -v t0="$t0" -v name="$name" 'BEGIN{printf "%s\t%.1f\n", name, now - t0}' | tee -a "$OUT/probe.tsv"
}
: > "$OUT/probe.tsv"
run workers12 $PY -u "${TRAIN[@]}" --n_folder 1 --workers 12
run workers2 $PY -u "${TRAIN[@]}" --n_folder 2 --workers 2
run workers0 $PY -u "${TRAIN[@]}" --n_folder 4 --workers 0
run workers12_profiled $PY -u -m cProfile -o "$OUT/w12.prof" "${TRAIN[@]}" --n_folder 3 --workers 12
[ -f "$OUT/w12.prof" ] && $PY -c "import pstats,sys; s=pstats.Stats(sys.argv[1]); s.sort_stats('cumulative').print_stats(40); s.sort_stats('tottime').print_stats(15)" \
  "$OUT/w12.prof" > "$OUT/w12_profile.txt" 2>&1
for log in "$OUT"/workers*.log; do echo "== $log"; tail -n 4 "$log"; done
