#!/usr/bin/env bash
# Create or refresh the project's virtual environments from pinned files (requirements/).
#
#   scripts/bootstrap.sh run     .venv        the product: offline stack, serving, CLI (`make run`)
#   scripts/bootstrap.sh train   .venv-train  + torch, onnx, onnxscript (`make model`)
#   scripts/bootstrap.sh test    .venv-test   + pytest, ruff, mypy, playwright; and the tools
#                                .venv-sam (aws-sam-cli), .venv-checkov, Debian's chromium
#   scripts/bootstrap.sh sam     .venv-sam    aws-sam-cli alone (`make build`)
#
# Several may be named at once. .venv-train is layered on .venv and .venv-test on .venv-train:
# a layer holds only its own additions (requirements/train.lock, test.lock, installed with
# --no-deps) and a .pth file that puts the layer below it on sys.path, so the pinned set of
# .venv is installed once and `make run` never installs torch.
# Each environment is rebuilt only when the files that pin it change (a stamp in the folder).
# Progress goes to stderr: one line per environment and step, with elapsed seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$SECONDS

say() { printf 'bootstrap: [%3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

# Settings that send pip's installs or Python's imports elsewhere: the environments would be
# stamped complete while their packages lay outside them (or came from another tree).
unset PYTHONPATH PYTHONHOME PIP_TARGET PIP_PREFIX PIP_USER

# One bootstrap at a time in a checkout (`make run` beside `make test`, `make -j`): two
# builds of one environment delete each other's files and leave a stamp on a broken venv.
exec 9>"$ROOT/.bootstrap.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  say "another bootstrap is building this checkout's environments; waiting for it"
  flock 9
fi

source scripts/find_python.sh
source scripts/venv_layers.sh

# pip_install DIR LABEL PIP_ARGS...: pip install with a progress line every few packages
# (overwritten in place on a terminal), its full output in DIR/bootstrap.log.
pip_install() {
  local dir=$1 label=$2; shift 2
  local log="$dir/bootstrap.log" tty=0 n=0 line
  # In place on a terminal, unless builds run side by side (their lines would overwrite).
  [[ -t 2 && -z ${SIDE_BY_SIDE:-} ]] && tty=1
  set +o pipefail
  PYTHONUNBUFFERED=1 "$dir/bin/python" -m pip install --disable-pip-version-check \
    --progress-bar off "$@" 2>&1 | tee -a "$log" | while IFS= read -r line; do
      case $line in
        Collecting*|Processing*)
          n=$((n + 1))
          if ((tty)); then
            printf '\rbootstrap: [%3ds] %s: %d packages fetched ' $((SECONDS - T0)) "$label" "$n" >&2
          elif ((n % 15 == 0)); then
            say "$label: $n packages fetched"
          fi ;;
        "Installing collected packages"*)
          if ((tty)); then printf '\n' >&2; fi
          if ((n > 0)); then say "$label: $n packages fetched, unpacking them"; fi ;;
      esac
    done
  local rc=${PIPESTATUS[0]}
  set -o pipefail
  if ((rc != 0)); then
    grep -v "^WARNING: Location .* is ignored" "$log" | tail -25 >&2
    say "$label: pip failed (exit $rc); the full log is $log"
    return "$rc"
  fi
}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# What else an environment depends on: the checkout's path (its editable install and .pth
# files name it; scripts start with its interpreter's path) and the interpreter it was made
# from. A moved or copied checkout, or another Python, rebuilds it.
origin_of() { printf '%s\n%s\n%s\n' "$ROOT" "$1" "$("$1" -c 'import sys; print(sys.version)')"; }

# Stamped, and its interpreter still runs (a removed pyenv version leaves a dangling link).
up_to_date() {
  [[ -f "$1/.stamp" && "$(cat "$1/.stamp")" == "$2" ]] && "$1/bin/python" -c '' 2>/dev/null
}

new_venv() {
  local dir=$1 python=$2; shift 2
  rm -rf "$dir"
  "$python" -m venv "$@" "$dir"
  : > "$dir/bootstrap.log"
}

# A full environment from a complete lock file. With --no-deps, pip installs exactly the
# lock and `pip check` proves it complete, so nothing unpinned ever enters.
# make_venv [--no-deps] DIR PYTHON LOCK STAMP_INPUTS...
make_venv() {
  local pip_args=()
  if [[ $1 == --no-deps ]]; then pip_args=(--no-deps); shift; fi
  local dir=$1 python=$2 lock=$3; shift 3
  local stamp; stamp=$(stamp_of "$lock" "$@" <(origin_of "$python"))
  up_to_date "$dir" "$stamp" && return 0
  local started=$SECONDS
  say "building $dir from $lock (one-time; later runs reuse it)"
  new_venv "$dir" "$python"
  pip_install "$dir" "$dir" "${pip_args[@]}" -r "$lock"
  if ((${#pip_args[@]})) && ! "$dir/bin/python" -m pip check --disable-pip-version-check >>"$dir/bootstrap.log" 2>&1; then
    tail -5 "$dir/bootstrap.log" >&2
    say "$dir: $lock does not pin everything its packages need (pip check); regenerate it with scripts/lock.sh"
    return 1
  fi
  echo "$stamp" > "$dir/.stamp"
  say "$dir ready in $((SECONDS - started)) s"
}

# A layer: its own lock's packages (--no-deps: the lock lists every addition), with BASE's
# packages (pip and setuptools included) visible through a .pth file. make_layer DIR BASE PYTHON LOCK STAMP_INPUTS...
make_layer() {
  local dir=$1 base=$2 python=$3 lock=$4; shift 4
  local pth; pth=$(layer_pth "$ROOT/$base")
  local stamp; stamp=$(stamp_of "$lock" "$@" <(echo "$pth") <(origin_of "$python"))
  up_to_date "$dir" "$stamp" && return 0
  local started=$SECONDS
  say "building $dir from $lock, layered on $base (one-time; later runs reuse it)"
  # No pip or setuptools of its own (they would hide the base's): the base's pip, seen through
  # the .pth file, installs into this layer.
  new_venv "$dir" "$python" --without-pip
  echo "$pth" > "$(purelib "$dir")/_scones_layer.pth"
  if ! pip_install "$dir" "$dir" --no-deps -r "$lock"; then
    if grep -q "torch==" "$lock" && grep -qi "torch" "$dir/bootstrap.log"; then
      say "$(grep -m1 '^torch==' "$lock") is torch's CPU build, which PyPI does not serve: give pip a folder holding its wheel (PIP_FIND_LINKS) or an index that serves it (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)"
    fi
    return 1
  fi
  # The layers together must form one consistent set (pip sees all of them from here).
  if ! "$dir/bin/python" -m pip check --disable-pip-version-check >>"$dir/bootstrap.log" 2>&1; then
    tail -5 "$dir/bootstrap.log" >&2
    say "$dir: the pinned sets do not fit together (pip check); regenerate them with scripts/lock.sh"
    return 1
  fi
  echo "$stamp" > "$dir/.stamp"
  say "$dir ready in $((SECONDS - started)) s"
}

# Each function below finds its Python in an assignment of its own: a Python that is missing
# stops the script there (set -e), where a failure inside an argument would not.
run_env() {
  local py311; py311=$(find_python 3.11)
  # Exactly the lock (--no-deps), proved complete by pip check: nothing unpinned enters.
  make_venv --no-deps .venv "$py311" requirements/run.lock pyproject.toml
  # The project itself, editable, without touching the pinned set (the layers see it too).
  if ! .venv/bin/python -c "import scones, scones_core" 2>/dev/null; then
    say "installing the project into .venv (editable)"
    pip_install .venv .venv --no-deps --no-build-isolation -e .
  fi
}

train_env() {
  run_env
  local py311; py311=$(find_python 3.11)
  make_layer .venv-train .venv "$py311" requirements/train.lock requirements/run.lock
}

# checkov pins many libraries: its own venv.
checkov_env() {
  local py311; py311=$(find_python 3.11)
  make_venv --no-deps .venv-checkov "$py311" requirements/checkov.lock
}

# side_by_side FUNCTION...: each function in a background job of its own, started now;
# SIDE_PIDS and SIDE_NAMES keep them for join_side_jobs. A build mostly waits on the
# registry, so independent environments are built at the same time.
SIDE_PIDS=()
SIDE_NAMES=()
side_by_side() {
  local fn
  export SIDE_BY_SIDE=1
  for fn in "$@"; do
    "$fn" &
    SIDE_PIDS+=($!)
    SIDE_NAMES+=("$fn")
  done
}

# join_side_jobs: waits for every job side_by_side started; fails if any failed, after all
# have ended (each one's own error is already on stderr).
join_side_jobs() {
  local i failed=()
  for i in "${!SIDE_PIDS[@]}"; do
    wait "${SIDE_PIDS[$i]}" || failed+=("${SIDE_NAMES[$i]%_env}")
  done
  SIDE_PIDS=()
  SIDE_NAMES=()
  if ((${#failed[@]})); then
    say "failed: ${failed[*]} (see the lines above)"
    return 1
  fi
}

# A failure or Ctrl-C stops the builds still running beside it: no pip left writing a venv.
stop_side_jobs() {
  local pid
  for pid in "${SIDE_PIDS[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null || true  # its pip, tee and progress reader
    kill "$pid" 2>/dev/null || true
  done
}
trap stop_side_jobs EXIT

test_env() {
  # The tools' venvs (aws-sam-cli, checkov) depend on nothing else here.
  side_by_side sam_env checkov_env
  train_env
  local py311; py311=$(find_python 3.11)
  make_layer .venv-test .venv-train "$py311" requirements/test.lock \
    requirements/train.lock requirements/run.lock
  join_side_jobs
  # The browser tests drive Debian's chromium (Playwright's own browser download cannot be
  # used here), and the serving image is built without Docker (buildah + mmdebstrap).
  local missing=() tool
  for tool in chromium buildah mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if (( ${#missing[@]} )); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      say "installing Debian's ${missing[*]} for the browser and image tests (one-time)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      say "missing ${missing[*]}: run 'apt-get install ${missing[*]}' (the browser and image tests need them)"
    fi
  fi
}

# aws-sam-cli pins an older boto3: its own venv.
sam_env() {
  local py311; py311=$(find_python 3.11)
  make_venv --no-deps .venv-sam "$py311" requirements/sam.lock
}

[[ $# -gt 0 ]] || set -- run
for target in "$@"; do
  case $target in
    run) run_env ;;
    train) train_env ;;
    test | --tools) test_env ;;
    sam) sam_env ;;
    *) echo "usage: scripts/bootstrap.sh [run|train|test|sam]..." >&2; exit 2 ;;
  esac
done
if ((SECONDS - T0 > 1)); then say "done"; fi
