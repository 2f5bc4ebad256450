#!/usr/bin/env bash
# libvirtd + QEMU for the libvirt driver's tests (Debian/Ubuntu, no systemd needed), and the libvirt-python
# binding in the project's .venv. Domains use type 'qemu' (TCG), so /dev/kvm is not needed.
#
#   scripts/services/libvirt.sh start   # apt-get install (once), a private libvirtd, writes env/libvirt.env
#   scripts/services/libvirt.sh stop    # removes its domains and stops that libvirtd
#
# The libvirtd is this checkout's own (scripts/services/lib/libvirtd.sh): it runs in its own mount namespace with
# its state under $OPENCSBS_WORK/libvirt and answers on the socket $OPENCSBS_WORK/libvirt/sock/libvirt-sock
# (OPENCSBS_TEST_LIBVIRT_URI=qemu:///system?socket=...), so two checkouts (two OPENCSBS_WORK) define their test
# domains side by side, and the machine's own libvirtd and its /etc/libvirt are never touched.
# Needs root (apt-get, mount namespaces). Idempotent: this checkout's libvirtd, when it answers, is reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${OPENCSBS_WORK:-$ROOT/.work}
ENV_FILE=$WORK/env/libvirt.env
RUN=$WORK/libvirt
# shellcheck source=scripts/services/lib/libvirtd.sh
. "$ROOT/scripts/services/lib/libvirtd.sh"
URI=$(private_libvirtd_uri "$RUN")
mkdir -p "$WORK/env" "$RUN"

start() {
  if [ "$(id -u)" != 0 ]; then echo "libvirt.sh: needs root (apt-get, a libvirtd in its own mount namespace)" >&2; exit 1; fi
  local pkgs="libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc qemu-system-x86 qemu-utils"
  local have
  have=$(dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | grep -c '^install ok installed$' || true)
  if [ "$have" != "$(echo $pkgs | wc -w)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs >/dev/null; }
  fi
  private_libvirtd_up "$RUN"
  # the Python binding (compiled against the installed libvirt) in the project's venv
  if [ -x "$ROOT/.venv/bin/python" ] && ! "$ROOT/.venv/bin/python" -c 'import libvirt' 2>/dev/null; then
    "$ROOT/.venv/bin/pip" install -q -e "$ROOT[libvirt]"
  fi
  mkdir -p "$RUN/disks"
  cat > "$ENV_FILE" <<ENV
export OPENCSBS_TEST_LIBVIRT_URI='$URI'
export OPENCSBS_TEST_LIBVIRT_DIR=$RUN/disks
ENV
  virsh -c "$URI" version
}

stop() {
  private_libvirtd_down "$RUN"
  rm -f "$ENV_FILE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
