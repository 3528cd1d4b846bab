#!/usr/bin/env bash
# Quickstart: install into .venv, then run the default study (config/config.yaml) on all cores.
# Extra arguments go to snakemake, e.g. `--configfile config/paper.yaml` or `-n`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash workflow/scripts/install.sh
. .venv/bin/activate
snakemake --cores all "$@"
