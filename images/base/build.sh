#!/usr/bin/env bash
# make base-image: the Python base the images build FROM, on machines that cannot pull the default one.
#
# Tries the Dockerfiles' default base (python:3.11-slim-bookworm pinned by digest, images/cpu/Dockerfile);
# where no registry answers it builds a Debian bookworm root filesystem from Debian packages with
# debootstrap (Python 3.11, venv, Debian's CA certificates: the Python requirements.lock is resolved for)
# and imports it as LOCAL_BASE. Either way it writes the base to use to OUT, which `make images` reads.
# A base already pulled or built is reused (delete it with `docker rmi` to build again).
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER=${DOCKER:-docker}
LOCAL_BASE=${LOCAL_BASE:-slmforge/python-base:bookworm}
OUT=${OUT:-build/docker/base-image}
DEFAULT=$(sed -n 's/^ARG BASE_IMAGE=//p' images/cpu/Dockerfile)
mkdir -p "$(dirname "$OUT")"

if $DOCKER image inspect "$DEFAULT" >/dev/null 2>&1 || $DOCKER pull -q "$DEFAULT" >/dev/null 2>&1; then
  echo "base-image: the default base $DEFAULT is available; nothing to build"
  echo "$DEFAULT" > "$OUT"
  exit 0
fi
if $DOCKER image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
  echo "base-image: the default base cannot be pulled here; using $LOCAL_BASE built earlier by debootstrap"
  echo "$LOCAL_BASE" > "$OUT"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root (run as root, or pass a pullable base: make images BASE_IMAGE=...)"; exit 2; }
if ! command -v debootstrap >/dev/null; then
  # as images/engine.sh installs docker.io: Debian's package, where apt can install it
  command -v apt-get >/dev/null || {
    echo "base-image: the default base $DEFAULT cannot be pulled and debootstrap is missing: install it or pass a base: make images BASE_IMAGE=..."
    exit 2
  }
  echo "base-image: installing Debian's debootstrap (apt-get)"
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } || {
    echo "base-image: apt-get could not install debootstrap: install it or pass a base: make images BASE_IMAGE=..."
    exit 2
  }
fi
# The Debian mirror this machine's apt uses (deb822 or one-line sources), else Debian's own.
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p; s/^deb \(http[^ ]*debian\)\/* bookworm .*/\1/p' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "base-image: the default base $DEFAULT cannot be pulled here; building $LOCAL_BASE with debootstrap from $MIRROR"
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
  || { tail -20 "$ROOTFS.log"; echo "base-image: debootstrap failed (log: $ROOTFS.log)"; exit 1; }
# apt's lists and caches are not part of an image; the image's apt-get update fetches fresh ones
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | $DOCKER import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
echo "$LOCAL_BASE" > "$OUT"
echo "base-image: built $LOCAL_BASE in $((SECONDS - start)) s ($($DOCKER image inspect -f '{{.Size}}' "$LOCAL_BASE" | awk '{printf "%.0f MB", $1/1e6}'))"
