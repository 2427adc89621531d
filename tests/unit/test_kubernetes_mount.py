"""The subPath check: a pod's config file with no ..data beside it gets a warning."""

from __future__ import annotations

import os
from pathlib import Path

from mira.adapters.kubernetes_mount import subpath_mount_warning


def test_a_config_file_mounted_with_subpath_in_a_pod_is_warned_about(tmp_path: Path) -> None:
    pod = tmp_path / "serviceaccount"
    pod.mkdir()
    (tmp_path / "app").mkdir()
    config = tmp_path / "app" / "config.json"
    config.write_text("{}")
    warning = subpath_mount_warning(str(config), str(pod))
    assert warning is not None and "subPath" in warning and "as a directory" in warning


def test_a_configmap_directory_or_no_pod_is_fine(tmp_path: Path) -> None:
    pod = tmp_path / "serviceaccount"
    pod.mkdir()
    volume = tmp_path / "volume"
    (volume / "..2026_12_02").mkdir(parents=True)
    os.symlink("..2026_12_02", volume / "..data")
    (volume / "..data" / "config.json").write_text("{}")
    os.symlink("..data/config.json", volume / "config.json")
    assert subpath_mount_warning(str(volume / "config.json"), str(pod)) is None
    assert subpath_mount_warning(str(tmp_path / "x.json"), str(tmp_path / "no-pod")) is None
