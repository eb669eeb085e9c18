#!/usr/bin/env bash
# The test command: sets up .venv (and ffmpeg), then runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_FFMPEG=1 bash scripts/setup_env.sh
export CUDA_VISIBLE_DEVICES=""
exec .venv/bin/python -m pytest -q tests "$@"
