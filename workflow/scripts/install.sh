#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root and install the project with what the
# workflow and the tests need. Used by the Quickstart commands and by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# Pin the PyTorch pair first: these builds are known to import together (see README, Install).
if [ "$(uname -m)" = "x86_64" ]; then
  python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
fi
python -m pip install --quiet -e '.[test]'
