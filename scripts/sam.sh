#!/usr/bin/env bash
# Run the project's aws-sam-cli (.venv-sam) with Python 3.13 on PATH: `sam build` packages the
# python3.13 Lambda runtime with it, without Docker.   scripts/sam.sh build | deploy | ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/find_python.sh
if [[ ! -x .venv-sam/bin/sam ]]; then
  echo "sam.sh: .venv-sam/bin/sam is missing: run scripts/bootstrap.sh sam" >&2
  exit 1
fi
PY313=$(find_python 3.13) || {
  echo "sam.sh: sam build needs Python 3.13 (the Lambda runtime); install it (e.g. pyenv install 3.13)" >&2
  exit 1
}
export PATH="$(dirname "$PY313"):$PATH"
export SAM_CLI_TELEMETRY=0
exec .venv-sam/bin/sam "$@"
