#!/bin/sh
# A Debian bookworm + Python 3.11 base image built without a registry (root, mmdebstrap):
# deploy/docker/build-base-image.sh [TAG]   then: make image BASE_IMAGE=TAG
# The host's CA bundle goes in (with PIP_CERT set) so pip works behind a TLS-inspecting proxy.
set -eu
tag=${1:-mira-base:bookworm}
if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "build-base-image.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2
    exit 2
fi
cert=/etc/ssl/certs/ca-certificates.crt
set -- --quiet --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/archives/*.deb'
[ -r "$cert" ] && set -- "$@" --customize-hook="upload $cert $cert"
mmdebstrap "$@" bookworm - |
    docker import -c "ENV PIP_CERT=$cert" -c 'CMD ["python"]' - "$tag"
