"""Cloud drivers behind one interface (``clouds.base.CloudDriver``): sandbox (built in), libvirt, openstack."""
