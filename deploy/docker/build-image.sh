#!/bin/sh
# Build Mira's image: deploy/docker/build-image.sh [BASE_IMAGE [TAG [docker build options...]]]
# Checks the base image first, so a missing one names the build argument to set.
set -eu
base=${1:-python:3.11.13-slim-bookworm}
tag=${2:-mira:0.1.0}
[ $# -ge 2 ] && shift 2 || shift $#
cd "$(dirname "$0")/../.."
if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null 2>&1; then
    echo "build-image.sh: base image '$base' is not available here and cannot be pulled." \
        "Set the build argument BASE_IMAGE to an image you have" \
        "(make image BASE_IMAGE=IMAGE, or docker build --build-arg BASE_IMAGE=IMAGE);" \
        "without a registry, make base-image builds one (mira-base:bookworm)." >&2
    exit 2
fi
exec docker build --build-arg BASE_IMAGE="$base" -t "$tag" "$@" .
