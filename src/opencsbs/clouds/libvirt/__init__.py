"""The libvirt driver: the servers of one KVM/QEMU host (``cloud.driver = libvirt``, ``cloud.libvirt_uri``)."""

from opencsbs.clouds.libvirt.config import LibvirtConfig
from opencsbs.clouds.libvirt.datapath import LibvirtDataPath
from opencsbs.clouds.libvirt.driver import LibvirtDriver
from opencsbs.clouds.libvirt.inventory import LibvirtInventory

__all__ = ["LibvirtConfig", "LibvirtDataPath", "LibvirtDriver", "LibvirtInventory"]
