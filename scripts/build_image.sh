#!/usr/bin/env bash
# Build the model-serving image (Dockerfile) without Docker: buildah on a Debian base.
#   scripts/build_image.sh           build (or reuse) the image; print its name last
#   scripts/build_image.sh --digest  print the digest of the image's inputs and exit
#
# 1. mmdebstrap makes a Debian bookworm minbase root filesystem with python3
#    (cached as build/image/base-<digest>.tar; about 1-2 minutes, mostly download).
# 2. buildah turns it into a base image: from scratch, mount, untar, commit.
# 3. buildah bud builds the Dockerfile on it (--build-arg BASE=..., --pull-never:
#    registry pulls fail here). pip inside the build reaches the package index
#    through the machine's pip configuration and CA bundle, mounted read-only at
#    their own paths (the files `pip config debug` names).
# The image is tagged localhost/scones-model:<digest of its inputs>; when that
# tag exists the build is skipped. Everything lives under build/image/ (ignored by
# git, removed by `make clean`), including buildah's storage (vfs driver). Builds take
# turns (build/image/build.lock): a second one waits, then reuses the first's image.
# Needs root (or a user namespace) and: apt-get install buildah mmdebstrap
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=build/image
SUITE=bookworm
# python3-venv: the Dockerfile makes a venv (Debian's python3 refuses system pip installs).
INCLUDE=python3,python3-venv
IMAGE=localhost/scones-model
BASE_IMAGE=localhost/scones-base

buildah_() {
  buildah --root "$PWD/$STATE/storage" --runroot "$PWD/$STATE/run" --storage-driver vfs "$@"
}

log() { echo "build_image: $*" >&2; }

mmdebstrap_args=(
  --variant=minbase --include="$INCLUDE"
  # merged /usr without the usrmerge package (which pulls in perl, ~50 MB)
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  # No documentation, but every package's copyright file: the licenses of the GPL, LGPL
  # and notice-only packages (libc6, bash, libssl3, zlib1g, ...) travel with the image.
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
  "$SUITE"
)

base_digest() {
  printf '%s\n' "${mmdebstrap_args[@]}" | sha256sum | cut -c1-12
}

# The sources of every COPY in the Dockerfile, as files (minus __pycache__).
copied_files() {
  local line word words
  grep -E '^COPY ' Dockerfile | while read -r line; do
    read -r -a words <<<"${line#COPY }"
    for word in "${words[@]:0:${#words[@]}-1}"; do
      [[ $word == --* ]] && continue
      find "$word" -type f -not -path '*/__pycache__/*' -not -name '*.pyc'
    done
  done | sort -u
}

image_digest() {
  {
    echo "base $(base_digest)"
    sha256sum Dockerfile .dockerignore scripts/build_image.sh
    copied_files | xargs sha256sum
  } | sha256sum | cut -c1-12
}

if [[ ${1:-} == --digest ]]; then
  image_digest
  exit 0
fi

for tool in buildah mmdebstrap; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool is not installed (apt-get install buildah mmdebstrap)"
    exit 3
  fi
done

mkdir -p "$STATE"
# One build at a time: a second one (another terminal, a parallel test) waits here, then
# reuses what the first built, instead of writing the same files beside it.
exec {lock}>"$STATE/build.lock"
if ! flock --nonblock "$lock"; then
  log "another build of the image is running: waiting for it to finish"
  flock "$lock"
fi
digest=$(image_digest)
tag="$IMAGE:$digest"
if buildah_ inspect --type image "$tag" >/dev/null 2>&1; then
  log "reusing $tag (its inputs are unchanged)"
  echo "$tag"
  exit 0
fi

started=$(date +%s)
base_id=$(base_digest)
base_tag="$BASE_IMAGE:$base_id"
rootfs="$STATE/base-$base_id.tar"
if ! buildah_ inspect --type image "$base_tag" >/dev/null 2>&1; then
  if [[ ! -f $rootfs ]]; then
    log "mmdebstrap: Debian $SUITE minbase with $INCLUDE -> $rootfs"
    mmdebstrap --quiet --format=tar "${mmdebstrap_args[@]}" "$rootfs.partial"
    mv "$rootfs.partial" "$rootfs"
  fi
  log "base image $base_tag from $rootfs"
  container=$(buildah_ from scratch)
  mountpoint=$(buildah_ mount "$container")
  tar --extract --file "$rootfs" --directory "$mountpoint" --numeric-owner
  buildah_ umount "$container" >/dev/null
  buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$container"
  buildah_ commit --quiet --rm "$container" "$base_tag" >/dev/null
fi
base_done=$(date +%s)

# pip's configuration files and the files they name (CA bundle, constraints),
# mounted read-only so pip in the build reaches the index the way it does here.
pip_cmd=(python3 -m pip)
[[ -x .venv/bin/python ]] && pip_cmd=(.venv/bin/python -m pip)
mounts=()
while read -r file; do
  [[ -f $file ]] && mounts+=(-v "$file:$file:ro")
done < <(
  {
    "${pip_cmd[@]}" config debug 2>/dev/null | sed -n 's/^ *\(\/[^,]*\), exists: True$/\1/p'
    "${pip_cmd[@]}" config list 2>/dev/null | sed -n "s/^[^=]*\.\(cert\|constraint\|client-cert\)='\(.*\)'$/\2/p"
    [[ -n ${PIP_CERT:-} ]] && echo "$PIP_CERT"
  } | sort -u
)

log "buildah bud -> $tag (pip config mounted: ${#mounts[@]} flags)"
# (pip's notes about this machine's local package folders, absent in the build, dropped)
buildah_ bud --isolation chroot --pull-never --layers=false --quiet \
  --build-arg BASE="$base_tag" "${mounts[@]}" \
  --tag "$tag" --tag "$IMAGE:latest" . 2>&1 >/dev/null \
  | { grep -v "^WARNING: Location .* is ignored" || true; } >&2
finished=$(date +%s)

# Drop what the build left untagged, and images of older inputs (this storage is ours alone).
buildah_ images --format '{{.ID}} {{.Name}}:{{.Tag}}' | while read -r id name; do
  case $name in
    "$tag" | "$IMAGE:latest" | "$base_tag") ;;
    *) buildah_ rmi --force "$id" >/dev/null 2>&1 || true ;;
  esac
done
find "$STATE" -maxdepth 1 -name 'base-*.tar' -not -name "base-$base_id.tar" -delete
size=$(buildah_ images --format '{{.Size}}' "$tag" | sed -n 1p)
log "built $tag in $((finished - started)) s (base image $((base_done - started)) s), $size"
cat >"$STATE/last-build.json" <<EOF
{"image": "$tag", "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "seconds": $((finished - started)),
 "base_seconds": $((base_done - started)), "size": "$size"}
EOF
echo "$tag"
