#!/usr/bin/env bash
# The demo: sets up .venv (pinned requirements), then runs the whole system on the synthetic corpus on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python demo.py "$@"
