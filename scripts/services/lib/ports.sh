# shellcheck shell=bash
# free_port: prints a TCP port of 127.0.0.1 nothing listens on now (the kernel's choice), for the components'
# "auto" ports (keystone.sh, s3.sh, ceph.sh, openstack.sh).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
