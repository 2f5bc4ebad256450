# shellcheck shell=bash
# A private libvirtd + virtlogd in their own mount namespace, sourced by libvirt.sh (the libvirt driver's tests) and
# openstack.sh (Nova's kvm-host). /run/libvirt, /var/lib/libvirt, /etc/libvirt, /var/log/libvirt and
# /var/cache/libvirt are bind mounts of DIR/{run,lib,etc,log,cache} inside that namespace only, so each daemon keeps
# its own domains, secrets and state, never meets the machine's libvirtd or another checkout's, and clients reach it
# through the socket DIR/sock/libvirt-sock:
#
#   private_libvirtd_uri DIR    # prints qemu:///system?socket=DIR/sock/libvirt-sock
#   private_libvirtd_up DIR     # starts both daemons (idempotent: an answering daemon is kept), waits for the socket
#   private_libvirtd_down DIR   # destroys and undefines its domains, stops both daemons (by their pid files)
#
# QEMU runs as root without a security driver and without cgroups (test domains only): two daemons may then run
# domains of the same name and id, which would otherwise share the cgroup machine/qemu-ID-NAME.libvirt-qemu.
# Needs root (mount namespaces, bind mounts).

private_libvirtd_uri() { echo "qemu:///system?socket=$1/sock/libvirt-sock"; }

private_libvirtd_up() {
  local dir=$1 uri
  uri=$(private_libvirtd_uri "$dir")
  if [ -f "$dir/libvirtd.pid" ] && kill -0 "$(cat "$dir/libvirtd.pid")" 2>/dev/null \
      && virsh -c "$uri" version >/dev/null 2>&1; then
    return 0
  fi
  private_libvirtd_down "$dir"
  # the QEMU driver refuses to initialise unless its compiled-in user exists (normally made by libvirt-daemon-system)
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -M -s /usr/sbin/nologin libvirt-qemu
  mkdir -p "$dir"/{run,lib,etc,log/qemu,cache,sock} /run/libvirt /var/lib/libvirt /etc/libvirt /var/log/libvirt /var/cache/libvirt
  rm -f "$dir"/sock/* "$dir"/run/*-sock
  cat > "$dir/etc/libvirtd.conf" <<CONF
unix_sock_dir = "$dir/sock"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$dir/libvirtd.log"
CONF
  printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\n' > "$dir/etc/qemu.conf"
  unshare --mount --propagation private -- /bin/sh -ec "
    for d in run:/run/libvirt lib:/var/lib/libvirt etc:/etc/libvirt log:/var/log/libvirt cache:/var/cache/libvirt; do
      mount --bind \"$dir/\${d%%:*}\" \"\${d#*:}\"
    done
    /usr/sbin/virtlogd -d --pid-file '$dir/virtlogd.pid'
    for i in \$(seq 1 40); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.25; done
    /usr/sbin/libvirtd -d -f '$dir/etc/libvirtd.conf' --pid-file '$dir/libvirtd.pid'
  "
  local _
  for _ in $(seq 1 120); do virsh -c "$uri" version >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "the private libvirtd did not answer on $uri" >&2; tail -20 "$dir/libvirtd.log" >&2 || true; return 1
}

private_libvirtd_down() {
  local dir=$1 uri n p d _
  [ -f "$dir/libvirtd.pid" ] || [ -f "$dir/virtlogd.pid" ] || return 0
  uri=$(private_libvirtd_uri "$dir")
  if virsh -c "$uri" version >/dev/null 2>&1; then
    for d in $(virsh -c "$uri" list --all --name 2>/dev/null); do
      virsh -c "$uri" destroy "$d" >/dev/null 2>&1 || true
      virsh -c "$uri" undefine --nvram "$d" >/dev/null 2>&1 || virsh -c "$uri" undefine "$d" >/dev/null 2>&1 || true
    done
  fi
  for n in libvirtd virtlogd; do
    [ -f "$dir/$n.pid" ] || continue
    p=$(cat "$dir/$n.pid")
    if kill -TERM "$p" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$p" 2>/dev/null || true
    fi
    rm -f "$dir/$n.pid"
  done
}
