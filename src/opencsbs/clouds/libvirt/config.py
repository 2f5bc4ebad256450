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
    #: the KVM host ``uri`` reaches (placement: ``libvirt:<host>``); None: :func:`uri_host` of ``uri``, else the
    #: system's host name
    host: str | None = None

    @property
    def host_name(self) -> str:
        """The KVM host's name: ``host``, else the host of a remote ``uri``, else this machine's name."""
        if self.host:
            return self.host
        remote = uri_host(self.uri)
        if remote:
            return remote
        import socket

        return socket.gethostname()

    @classmethod
    def from_settings(cls, settings) -> LibvirtConfig:
        """From ``settings.cloud.libvirt_*`` (the scratch folder defaults to ``<data_dir>/libvirt-scratch``)."""
        cloud = settings.cloud
        return cls(uri=cloud.libvirt_uri, availability_zone=cloud.libvirt_az,
                   default_project=cloud.libvirt_project_id,
                   scratch_dir=Path(cloud.libvirt_scratch_dir or Path(settings.data_dir) / "libvirt-scratch"),
                   rbd=cloud.libvirt_rbd,
                   host=cloud.libvirt_host or (None if uri_host(cloud.libvirt_uri) else settings.worker.host))


def uri_host(uri: str) -> str | None:
    """The host of a remote libvirt URI (``qemu+ssh://backup@kvm-2:22/system`` -> ``kvm-2``); None for a local one
    (``qemu:///system``)."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(uri).hostname or None
    except ValueError:
        return None
