"""The OpenStack driver: Nova servers, Cinder volumes and Ironic bare-metal nodes (``cloud.driver = openstack``)."""

from opencsbs.clouds.openstack.driver import OpenStackDriver, OpenStackInventory, build_openstack_driver

__all__ = ["OpenStackDriver", "OpenStackInventory", "build_openstack_driver"]
