"""The libvirt driver's own settings, taken from :class:`opencsbs.config.Settings` once when the driver is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opencsbs.config import RbdSettings


@dataclass(frozen=True)
class LibvirtConfig:
    """``uri``: libvirt URI (``qemu:///system``, ``qemu+ssh://backup@host/system``); ``availability_zone``: the
    host's; ``default_project``: owner of the domains without project metadata (None: such domains are invisible);
    ``scratch_dir``: point-in-time copies and restore scratch files (data side); ``rbd``: the Ceph client settings
    for RBD network disks (None: such disks cannot be read or written)."""

    uri: str
    availability_zone: str | None = None
    default_project: str | None = None
    scratch_dir: Path = Path("libvirt-scratch")
    rbd: RbdSettings | None = None

    @classmethod
    def from_settings(cls, settings) -> LibvirtConfig:
        """From ``settings.cloud.libvirt_*`` (the scratch folder defaults to ``<data_dir>/libvirt-scratch``)."""
        cloud = settings.cloud
        return cls(uri=cloud.libvirt_uri, availability_zone=cloud.libvirt_az,
                   default_project=cloud.libvirt_project_id,
                   scratch_dir=Path(cloud.libvirt_scratch_dir or Path(settings.data_dir) / "libvirt-scratch"),
                   rbd=cloud.libvirt_rbd)
