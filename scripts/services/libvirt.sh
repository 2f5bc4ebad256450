#!/usr/bin/env bash
# libvirtd + QEMU for the libvirt driver's tests (Debian/Ubuntu, no systemd needed), and the libvirt-python
# binding in the project's .venv. Domains use type 'qemu' (TCG), so /dev/kvm is not needed.
#
#   scripts/services/libvirt.sh start   # apt-get install (once), virtlogd + libvirtd by hand, writes env/libvirt.env
#   scripts/services/libvirt.sh stop    # stops the daemons this script started (by their pid files)
#
# Needs root (apt-get, libvirtd on qemu:///system). Idempotent: a libvirtd already answering is reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${OPENCSBS_WORK:-$ROOT/.work}
ENV_FILE=$WORK/env/libvirt.env
URI=qemu:///system
RUN=$WORK/libvirt
mkdir -p "$WORK/env" "$RUN"

# true when something accepts connections on the unix socket $1
answers() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
PY
}

start() {
  if [ "$(id -u)" != 0 ]; then echo "libvirt.sh: needs root (apt-get, libvirtd)" >&2; exit 1; fi
  local pkgs="libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc qemu-system-x86 qemu-utils"
  local have
  have=$(dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | grep -c '^install ok installed$' || true)
  if [ "$have" != "$(echo $pkgs | wc -w)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $pkgs >/dev/null; }
  fi
  # the QEMU driver refuses to initialise unless its compiled-in user exists (normally made by libvirt-daemon-system)
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -M -s /usr/sbin/nologin libvirt-qemu
  mkdir -p /var/log/libvirt/qemu /etc/libvirt
  # QEMU as root without a security driver: test domains only; much faster define/start than the qemu user
  local conf='user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
  if [ "$(cat /etc/libvirt/qemu.conf 2>/dev/null)" != "$(printf "$conf")" ]; then
    printf "$conf" > /etc/libvirt/qemu.conf
  fi
  # a socket file can outlive its daemon (a killed session, a reboot without tmpfs): only an answering socket counts
  if ! answers /run/libvirt/virtlogd-sock; then
    rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
    /usr/sbin/virtlogd -d --pid-file "$RUN/virtlogd.pid"
    local up=0
    for _ in $(seq 1 40); do answers /run/libvirt/virtlogd-sock && { up=1; break; }; sleep 0.25; done
    [ $up = 1 ] || { echo "virtlogd did not answer on /run/libvirt/virtlogd-sock" >&2; exit 1; }
  fi
  if ! virsh -c $URI version >/dev/null 2>&1; then
    LIBVIRT_LOG_OUTPUTS="3:file:$RUN/libvirtd.log" /usr/sbin/libvirtd -d --pid-file "$RUN/libvirtd.pid"
  fi
  local ok=0
  for _ in $(seq 1 120); do virsh -c $URI version >/dev/null 2>&1 && { ok=1; break; }; sleep 0.25; done
  [ $ok = 1 ] || { echo "libvirtd did not answer on $URI" >&2; tail -20 "$RUN/libvirtd.log" >&2 || true; exit 1; }
  # the Python binding (compiled against the installed libvirt) in the project's venv
  if [ -x "$ROOT/.venv/bin/python" ] && ! "$ROOT/.venv/bin/python" -c 'import libvirt' 2>/dev/null; then
    "$ROOT/.venv/bin/pip" install -q -e "$ROOT[libvirt]"
  fi
  mkdir -p "$RUN/disks"
  cat > "$ENV_FILE" <<ENV
export OPENCSBS_TEST_LIBVIRT_URI=$URI
export OPENCSBS_TEST_LIBVIRT_DIR=$RUN/disks
ENV
  virsh -c $URI version
}

stop() {
  # domains left by tests (names start with opencsbs-test-) go first
  if virsh -c $URI version >/dev/null 2>&1; then
    for d in $(virsh -c $URI list --all --name 2>/dev/null | grep '^opencsbs-test-' || true); do
      virsh -c $URI destroy "$d" >/dev/null 2>&1 || true
      virsh -c $URI undefine "$d" >/dev/null 2>&1 || true
    done
  fi
  for f in "$RUN/libvirtd.pid" "$RUN/virtlogd.pid"; do
    if [ -f "$f" ]; then
      local pid; pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      rm -f "$f"
    fi
  done
  rm -f "$ENV_FILE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
