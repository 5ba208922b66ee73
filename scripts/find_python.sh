# find_python X.Y: print the path of a Python X.Y interpreter (PATH, ~/.pyenv, /usr/local, /usr).
# Sourced by scripts/bootstrap.sh and scripts/sam.sh.
find_python() {
  local want=$1
  for candidate in "python$want" "$HOME/.pyenv/versions/$want"*/bin/python "/usr/local/bin/python$want" "/usr/bin/python$want"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "Python $want was not found (looked on PATH and under ~/.pyenv/versions)" >&2
  return 1
}
