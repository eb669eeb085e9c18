# Sourced by bench/gpu_check.sh, bench/gpu_wav_check.sh and bench/gpu_speed.sh.
# `run_folders PREFIX` sets PY (default python3), OUT (required), WORK (default a new /tmp/PREFIX_XXXX), DATA
# and MODELS inside it, and the environment every check runs in.
run_folders() {
  PY=${PY:-python3}
  OUT=${OUT:?set OUT to the results folder}
  mkdir -p "$OUT"
  WORK=${WORK:-$(mktemp -d "/tmp/$1_XXXX")}
  mkdir -p "$WORK"
  DATA=$WORK/data
  MODELS=$WORK/saved_model
  export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
}

# `step NAME TIMEOUT_S command...` runs one step
# under `timeout` (cut to what is left before $DEADLINE; skipped with less than $STEP_MIN_S left), writes its
# output to $STEP_LOGS/NAME.log, shows its last $STEP_TAIL lines, and records exit code and seconds in
# $OUT/steps.tsv. A failing step does not stop the later ones.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt "$STEP_MIN_S" ]; then printf '%s\tskipped\t0.0\n' "$name" | tee -a "$OUT/steps.tsv"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local started=$(date +%s%N)
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$STEP_LOGS/$name.log" 2>&1
  local rc=$?
  local ms=$(( ($(date +%s%N) - started) / 1000000 ))
  tail -n "$STEP_TAIL" "$STEP_LOGS/$name.log"
  printf '%s\t%s\t%d.%d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000 / 100)) | tee -a "$OUT/steps.tsv"
}
