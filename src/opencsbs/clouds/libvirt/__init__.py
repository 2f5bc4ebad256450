"""The libvirt driver: the servers of one KVM/QEMU host (``cloud.driver = libvirt``, ``cloud.libvirt_uri``)."""

from opencsbs.clouds.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]
