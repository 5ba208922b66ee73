#!/usr/bin/env bash
# `make deploy`: check the AWS credentials first (fail at once without them), sam build,
# sam deploy with samconfig.toml (extra arguments go to sam deploy, e.g. --guided), then put
# the monitor's baseline into the stack's bucket and say whether the endpoint exists.
# A leading `--model DIR` (make deploy MODEL=DIR) names the model the stack serves: the
# preflight checks it fits the stack and its baseline is the one published.
set -euo pipefail
cd "$(dirname "$0")/.."
model=()
if [[ "${1:-}" == "--model" ]]; then
  if [[ $# -lt 2 ]]; then
    echo "scripts/deploy.sh: --model needs a model folder" >&2
    exit 2
  fi
  model=(--model "$2")
  shift 2
fi
# The checks read sam deploy's settings from the same options sam deploy is given.
.venv/bin/scones deploy-preflight "${model[@]}" -- "$@"
scripts/sam.sh build
scripts/sam.sh deploy "$@"
.venv/bin/scones deploy-baseline "${model[@]}" -- "$@"
