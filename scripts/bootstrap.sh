#!/usr/bin/env bash
# Create or refresh the project's virtual environments from pinned files.
#   scripts/bootstrap.sh          .venv (the product, the offline stack, the tests)
#   scripts/bootstrap.sh --tools  also .venv-sam (aws-sam-cli) and .venv-checkov
# Each environment is rebuilt only when the files that pin it change.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local want=$1
  for candidate in "python$want" "$HOME/.pyenv/versions/$want"*/bin/python "/usr/local/bin/python$want" "/usr/bin/python$want"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "bootstrap: Python $want was not found (looked on PATH and under ~/.pyenv/versions)" >&2
  return 1
}

# pip, without the notes this machine's pip configuration prints for every package.
quiet_pip() {
  local dir=$1; shift
  "$dir/bin/python" -m pip --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location .* is ignored" || true; } >&2
}

# make_venv DIR PYTHON STAMP_INPUTS... -- PIP_ARGS...
make_venv() {
  local dir=$1 python=$2; shift 2
  local inputs=()
  while [[ $1 != "--" ]]; do inputs+=("$1"); shift; done; shift
  local stamp
  stamp=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
    return 0
  fi
  echo "bootstrap: building $dir (one-time; later runs reuse it)" >&2
  rm -rf "$dir"
  "$python" -m venv "$dir"
  quiet_pip "$dir" install "$@"
  echo "$stamp" > "$dir/.stamp"
}

PY311=$(find_python 3.11)
make_venv .venv "$PY311" requirements/dev.lock pyproject.toml -- \
  -r requirements/dev.lock
# The project itself, editable, without touching the pinned set.
if ! .venv/bin/python -c "import scones, scones_core" 2>/dev/null; then
  quiet_pip .venv install --no-deps --no-build-isolation -e .
fi

if [[ ${1:-} == "--tools" ]]; then
  # aws-sam-cli pins its own boto3 and checkov pins many libraries: each gets its own venv.
  make_venv .venv-sam "$PY311" requirements/sam.txt -- -r requirements/sam.txt
  make_venv .venv-checkov "$PY311" requirements/checkov.txt -- -r requirements/checkov.txt
  # The serving image is built without Docker (buildah + mmdebstrap, Debian's packages),
  # and the review page's browser test drives Debian's chromium (Playwright's own browser
  # download cannot be used here).
  missing=()
  for tool in chromium buildah mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if (( ${#missing[@]} )); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing Debian's ${missing[*]} for the browser and image tests (one-time)" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bootstrap: missing ${missing[*]}: run 'apt-get install ${missing[*]}' (the browser and image tests need them)" >&2
    fi
  fi
fi
