"""What the libvirt tests share: where scripts/services/libvirt.sh put libvirtd (env/libvirt.env) and whether the
Python binding can reach it."""

from __future__ import annotations

import os
from pathlib import Path

URI = os.environ.get("OPENCSBS_TEST_LIBVIRT_URI")
DISK_DIR = Path(os.environ.get("OPENCSBS_TEST_LIBVIRT_DIR", "/tmp/opencsbs-libvirt-test"))


def libvirt_available() -> tuple[bool, str]:
    """(True, "") when libvirtd was started for the tests and libvirt-python imports; else (False, why)."""
    if not URI:
        return False, "libvirt not started (scripts/services/libvirt.sh start)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return False, "libvirt-python not installed (pip install -e '.[libvirt]')"
    return True, ""
