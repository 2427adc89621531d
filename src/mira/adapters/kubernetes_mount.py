"""Is the config file on a ConfigMap volume that can ever change? (a `subPath` mount cannot)."""

from __future__ import annotations

import os

#: present in every pod whose ServiceAccount token is mounted (the default)
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def subpath_mount_warning(
    config_path: str, serviceaccount_dir: str = SERVICEACCOUNT_DIR
) -> str | None:
    """A warning when this looks like a pod whose config file was mounted with `subPath`.

    The kubelet updates a ConfigMap volume by swapping the `..data` symlink in the mounted
    directory; a `subPath` mount is a bind mount of one file taken at pod start, so it has no
    `..data` beside it and never sees an update: hot reload would then be silently dead.
    """
    if not os.path.isdir(serviceaccount_dir):
        return None  # not in a pod
    directory = os.path.dirname(os.path.abspath(config_path))
    if os.path.lexists(os.path.join(directory, "..data")):
        return None
    return (
        f"{config_path} is not on a ConfigMap volume mounted as a directory (no ..data beside "
        "it): a subPath mount never sees ConfigMap updates, so hot reload will not see them; "
        "mount the ConfigMap as a directory (volumeMounts without subPath) and point Mira at "
        "the file inside it"
    )
