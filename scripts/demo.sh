#!/usr/bin/env bash
# The main command: set up .venv if needed, then run the embedded offline demo (tiny OFA models trained from
# scratch on a generated shapes world; about 10 minutes on a 2-core CPU). Extra arguments go to demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python demo.py "$@"
