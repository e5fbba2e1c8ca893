#!/usr/bin/env bash
# The main command (until the embedded demo exists): set up, then build each preset and print its size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m models
