#!/usr/bin/env bash
# `make deploy`: check the AWS credentials first (fail at once without them), sam build,
# sam deploy with samconfig.toml (extra arguments go to sam deploy, e.g. --guided), then put
# the monitor's baseline into the stack's bucket and say whether the endpoint exists.
set -euo pipefail
cd "$(dirname "$0")/.."
# --stack-name, --region and --profile given to sam deploy apply to the checks too.
picked=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --stack-name) picked+=(--stack "${args[i + 1]:-}") ;;
    --region | --profile) picked+=("${args[i]}" "${args[i + 1]:-}") ;;
  esac
done
.venv/bin/scones deploy-preflight "${picked[@]}"
scripts/sam.sh build
scripts/sam.sh deploy "$@"
.venv/bin/scones deploy-baseline "${picked[@]}"
