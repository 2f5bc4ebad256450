"""The libvirt driver: the servers of one KVM/QEMU host, as an inventory
(:mod:`opencsbs.clouds.libvirt.inventory`: the domains as :class:`~opencsbs.core.facts.ServerFacts`, through a
read-only connection and an event-driven XML cache) and a data path (:mod:`opencsbs.clouds.libvirt.datapath`:
pull-mode backups with checkpoints, RBD network disks, restores and power, through a read-write connection).
``qemu-img`` calls and backup XML are in :mod:`opencsbs.clouds.libvirt.qemu`. See ``docs/clouds.md``.
"""

from __future__ import annotations

from opencsbs.clouds.base import CloudDriver
from opencsbs.clouds.libvirt.config import LibvirtConfig
from opencsbs.clouds.libvirt.datapath import CHECKPOINT_DESCRIPTION, LibvirtDataPath
from opencsbs.clouds.libvirt.inventory import LibvirtInventory

__all__ = ["CHECKPOINT_DESCRIPTION", "LibvirtConfig", "LibvirtDriver"]


class LibvirtDriver(LibvirtInventory, LibvirtDataPath, CloudDriver):
    """Servers of one libvirt host, both roles (settings: :class:`LibvirtConfig`). Thread-safe. Raises
    ``ValueError`` when the RBD settings are incomplete."""

    def __init__(self, config: LibvirtConfig) -> None:
        LibvirtInventory.__init__(self, config)
        LibvirtDataPath.__init__(self, config)

    @classmethod
    def from_settings(cls, settings) -> LibvirtDriver:
        """The driver of ``settings.cloud.libvirt_*`` (:meth:`LibvirtConfig.from_settings`)."""
        return cls(LibvirtConfig.from_settings(settings))

    def placement_needs(self, server) -> tuple[str, ...]:
        """``libvirt:<host>``: a domain's disks and its libvirt are read on its KVM host only."""
        return (f"libvirt:{self.config.host_name}",)

    def placement_capabilities(self) -> tuple[str, ...]:
        """``libvirt:<host>``: the domains of this driver's KVM host."""
        return (f"libvirt:{self.config.host_name}",)

    def close(self) -> None:
        LibvirtDataPath.close(self)
        LibvirtInventory.close(self)
