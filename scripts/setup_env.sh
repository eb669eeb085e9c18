#!/usr/bin/env bash
# Creates .venv with the pinned requirements (idempotent). Installs ffmpeg from Debian if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, soundfile, python_speech_features, sklearn, matplotlib, onnxruntime, pytest" 2>/dev/null \
   || ! cmp -s requirements.txt .venv/.requirements-installed; then
  # torch is pinned: on these machines torch==2.13.0 resolves to the local CPU wheel; an unpinned
  # torch would pull several GB of CUDA libraries.
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/.requirements-installed
fi
if [ "${NEED_FFMPEG:-0}" = 1 ] && ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi
