# Helpers for venvs layered on one another (.venv-train on .venv, .venv-test on
# .venv-train). Sourced by scripts/bootstrap.sh, which builds them, and scripts/lock.sh,
# which freezes what each layer adds.

# purelib VENV: the venv's site-packages.
purelib() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }

# layer_pth BASE: the .pth line that layers a venv on BASE. BASE's prefix joins
# site.PREFIXES first, so site.getsitepackages() lists the layers below too (the offline
# stack's Lambda workers start with -S and take their libraries from it), then BASE's
# site-packages joins sys.path with its own .pth files (the layer below it, the editable
# install).
layer_pth() {
  # Quoted by Python itself: a path may hold a quote (/home/o'brien/...).
  "$1/bin/python" -c 'import sys
print("import site; site.PREFIXES.append(%r); site.addsitedir(%r)" % tuple(sys.argv[1:]))' \
    "$1" "$(purelib "$1")"
}
