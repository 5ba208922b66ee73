#!/usr/bin/env bash
# `make deploy`: check the AWS credentials first (fail at once without them), sam build,
# sam deploy with samconfig.toml (extra arguments go to sam deploy, e.g. --guided), then put
# the monitor's baseline into the stack's bucket and say whether the endpoint exists.
set -euo pipefail
cd "$(dirname "$0")/.."
# The checks read sam deploy's settings from the same options sam deploy is given.
.venv/bin/scones deploy-preflight -- "$@"
scripts/sam.sh build
scripts/sam.sh deploy "$@"
.venv/bin/scones deploy-baseline -- "$@"
