#!/usr/bin/env bash
# A single-node Ceph (Debian's Pacific 16.2 packages) for the RBD tests, everything on 127.0.0.1 and under
# $OPENCSBS_WORK/ceph: one monitor (:3300 v2, :6789 v1), one manager, one bluestore OSD on a sparse 10 GiB file
# (daemon ports 6800-6899), pool size 1, cephx on. Pools: "volumes" (Cinder's RBD backend) and "rbd" (libvirt
# domains, the benchmark). Users: client.cinder (rw on volumes: Cinder, and Nova through the libvirt secret) and
# client.opencsbs (rw on volumes and rbd: what opencsbs and the tests use), keyrings $OPENCSBS_WORK/ceph/ceph.client.<user>.keyring.
#
# A RADOS Gateway (radosgw, S3 with Object Lock enforced) on 127.0.0.1:$OPENCSBS_RGW_PORT (default 7481), its
# pools pre-created with 8 PGs each, an S3 user "opencsbs" whose keys go to env/ceph.env as OPENCSBS_TEST_RGW_*.
#
# Ports: OPENCSBS_CEPH_MON_PORT (v1, default 6789), OPENCSBS_CEPH_MON_PORT2 (v2, default 3300) and OPENCSBS_RGW_PORT
# each take a number or "auto" (a free port), so that two checkouts (two OPENCSBS_WORK) run their own clusters side
# by side; the other daemons take free ports of 6800-6899, which two clusters share. The choice is kept in
# $OPENCSBS_WORK/ceph/ports and holds for the cluster's life (stop deletes both).
#
#   scripts/services/ceph.sh start   # apt-get install (once), cluster from nothing (~15 s), RGW, writes env/ceph.env
#   scripts/services/ceph.sh rgw     # only the RGW part, on a running cluster (which it leaves alone)
#   scripts/services/ceph.sh stop    # stops the daemons (by their pid files) and deletes the cluster
#
# start is idempotent: a running cluster is reused, a stopped one restarted. Also links the librados/librbd
# bindings (python3-rados, python3-rbd: not on PyPI) into the project's .venv. Needs root (apt-get, daemons).
# No systemd, nothing in /etc/ceph or /var/lib/ceph.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${OPENCSBS_WORK:-$ROOT/.work}
W=$WORK/ceph
CONF=$W/ceph.conf
ENV_FILE=$WORK/env/ceph.env
PORT_MIN=6800 PORT_MAX=6899 PG_NUM=16 OSD_SIZE=10G
RGW_PG_NUM=8 RGW_USER=opencsbs
PORTS_FILE=$W/ports
# shellcheck source=scripts/services/lib/ports.sh
. "$HERE/lib/ports.sh"
choose_ports() {  # MON_PORT, MON_PORT2, RGW_PORT: this cluster's (made with them), else from the variables
  if [ -f "$PORTS_FILE" ]; then . "$PORTS_FILE"; return 0; fi
  read -r MON_PORT MON_PORT2 RGW_PORT <<<"${OPENCSBS_CEPH_MON_PORT:-6789} ${OPENCSBS_CEPH_MON_PORT2:-3300} ${OPENCSBS_RGW_PORT:-7481}"
  [ "$MON_PORT" = auto ] && MON_PORT=$(free_port)
  [ "$MON_PORT2" = auto ] && MON_PORT2=$(free_port)
  [ "$RGW_PORT" = auto ] && RGW_PORT=$(free_port)
  mkdir -p "$W"; printf 'MON_PORT=%s\nMON_PORT2=%s\nRGW_PORT=%s\n' "$MON_PORT" "$MON_PORT2" "$RGW_PORT" > "$PORTS_FILE"
}
RGW_POOLS=".rgw.root default.rgw.control default.rgw.meta default.rgw.log default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec"
PKGS="ceph-mon ceph-osd ceph-mgr ceph-common python3-rbd python3-rados qemu-block-extra uuid-runtime radosgw"
export CEPH_CONF=$CONF
T0=$(date +%s)
ts() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
alive() { [ -f "$W/run/$1.pid" ] && kill -0 "$(cat "$W/run/$1.pid")" 2>/dev/null; }
c() { timeout 30 ceph --connect-timeout 20 "$@"; }

# the rados/rbd extension modules of python3-rados/python3-rbd, linked into a venv whose Python has the same minor
# version (the .so files are built for Debian's python3); any other venv is left alone with a warning
link_bindings() {  # venv
  local venv=$1 site tag
  [ -x "$venv/bin/python" ] || return 0
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
  tag=$("$venv/bin/python" -c 'import sys; print(f"cpython-{sys.version_info[0]}{sys.version_info[1]}")')
  local found=0
  for m in rados rbd; do
    for so in /usr/lib/python3/dist-packages/$m.$tag-*.so; do
      [ -e "$so" ] && { ln -sf "$so" "$site/"; found=1; }
    done
  done
  [ $found = 1 ] || echo "warning: no rados/rbd module built for $tag in /usr/lib/python3/dist-packages: $venv cannot use librbd" >&2
}

install_packages() {
  local have
  have=$(dpkg-query -W -f='${Status}\n' $PKGS 2>/dev/null | grep -c '^install ok installed$' || true)
  if [ "$have" != "$(echo $PKGS | wc -w)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $PKGS >/dev/null 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $PKGS >/dev/null; }
    ts "packages installed"
  fi
}

write_conf() {
  cat > "$CONF" <<CONF
[global]
fsid = $(uuidgen)
mon_initial_members = a
mon_host = [v2:127.0.0.1:$MON_PORT2,v1:127.0.0.1:$MON_PORT]
public_network = 127.0.0.0/8
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_port_min = $PORT_MIN
ms_bind_port_max = $PORT_MAX
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
# one node, one copy
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_delete = true
# a shared, well-filled test disk must not turn the cluster HEALTH_WARN/ERR
mon_data_avail_warn = 5
mon_data_avail_crit = 1
# every path under $W
run_dir = $W/run
pid_file = $W/run/\$name.pid
admin_socket = $W/run/\$cluster-\$name.asok
log_file = $W/log/\$cluster-\$name.log
mon_cluster_log_file = $W/log/\$cluster.log
crash_dir = $W/log/crash
exec_dir = $W/run
[mon]
mon_data = $W/mon/\$cluster-\$id
keyring = \$mon_data/keyring
[mgr]
mgr_data = $W/mgr/\$cluster-\$id
keyring = \$mgr_data/keyring
[osd]
osd_data = $W/osd/\$cluster-\$id
keyring = \$osd_data/keyring
osd_objectstore = bluestore
# bluestore on the sparse file \$osd_data/block made by --mkfs (no LVM, loop or block device). Leave
# bluestore_block_path unset: mkfs would symlink \$osd_data/block to itself (ELOOP)
bluestore_block_create = true
bluestore_block_size = $(numfmt --from=iec "$OSD_SIZE")
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
osd_memory_target = 1073741824
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
[client]
# client.admin -> ceph.client.admin.keyring, client.cinder -> ceph.client.cinder.keyring, ... next to this file
keyring = $W/ceph.\$name.keyring
log_file = $W/log/\$cluster-\$name.\$pid.log
CONF
}

pool() {  # name
  if ! c osd pool ls | grep -qx "$1"; then
    c osd pool create "$1" "$PG_NUM" "$PG_NUM" replicated >/dev/null 2>&1
    c osd pool set "$1" size 1 --yes-i-really-mean-it >/dev/null 2>&1
    timeout 60 rbd pool init "$1"
  fi
}

user() {  # name caps...
  local name=$1; shift
  [ -s "$W/ceph.client.$name.keyring" ] || c auth get-or-create "client.$name" "$@" -o "$W/ceph.client.$name.keyring"
}

# the RADOS Gateway on the running cluster: its pools (few PGs: one OSD holds them all), its cephx user
# client.rgw.a, the daemon (options on its command line: ceph.conf is left as it is), the S3 user
rgw() {
  if [ "$(id -u)" != 0 ]; then echo "ceph.sh: needs root (apt-get, radosgw)" >&2; exit 1; fi
  choose_ports
  alive mon.a && alive osd.0 || { echo "ceph.sh rgw: the cluster under $W is not running (ceph.sh start)" >&2; exit 1; }
  install_packages
  mkdir -p "$W/rgw"
  if ! alive client.rgw.a || ! curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/"; then
    local existing p
    existing=$(c osd pool ls)
    for p in $RGW_POOLS; do
      if ! grep -qx -- "$p" <<<"$existing"; then
        c osd pool create "$p" "$RGW_PG_NUM" "$RGW_PG_NUM" replicated >/dev/null 2>&1
        c osd pool set "$p" size 1 --yes-i-really-mean-it >/dev/null 2>&1
        c osd pool application enable "$p" rgw >/dev/null 2>&1
      fi
    done
    user rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw'
    alive client.rgw.a || radosgw -n client.rgw.a --rgw_frontends="beast endpoint=127.0.0.1:$RGW_PORT" \
      --rgw_data="$W/rgw" --rgw_dns_name=127.0.0.1 --rgw_enable_usage_log=false \
      --log_file="$W/log/ceph-client.rgw.a.log"
    local up=0
    for _ in $(seq 1 120); do
      curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" && { up=1; break; }; sleep 0.5
    done
    [ $up = 1 ] || { echo "radosgw did not answer on :$RGW_PORT (see $W/log/ceph-client.rgw.a.log)" >&2; exit 1; }
    ts "rgw up on :$RGW_PORT"
  fi
  if [ ! -s "$W/rgw/keys" ]; then
    if ! timeout 60 radosgw-admin user info --uid="$RGW_USER" > "$W/rgw/user.json" 2>/dev/null; then
      timeout 60 radosgw-admin user create --uid="$RGW_USER" --display-name="opencsbs tests" > "$W/rgw/user.json"
    fi
    python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["keys"][0]; print(k["access_key"], k["secret_key"])' \
      "$W/rgw/user.json" > "$W/rgw/keys.tmp"
    mv "$W/rgw/keys.tmp" "$W/rgw/keys"; rm -f "$W/rgw/user.json"; chmod 600 "$W/rgw/keys"
  fi
  write_env
}

write_env() {
  mkdir -p "$WORK/env"
  local rgw_env=""
  if [ -s "$W/rgw/keys" ]; then
    read -r access secret < "$W/rgw/keys"
    rgw_env="export OPENCSBS_TEST_RGW_ENDPOINT=http://127.0.0.1:$RGW_PORT
export OPENCSBS_TEST_RGW_ACCESS_KEY=$access
export OPENCSBS_TEST_RGW_SECRET_KEY=$secret"
  fi
  cat > "$ENV_FILE" <<ENV
export OPENCSBS_TEST_CEPH_CONF=$CONF
export OPENCSBS_TEST_CEPH_USER=opencsbs
export OPENCSBS_TEST_CEPH_KEYRING=$W/ceph.client.opencsbs.keyring
export OPENCSBS_TEST_CEPH_POOL=rbd
export OPENCSBS_TEST_CEPH_VOLUMES_POOL=volumes
export OPENCSBS_TEST_CEPH_CINDER_USER=cinder
export OPENCSBS_TEST_CEPH_CINDER_KEYRING=$W/ceph.client.cinder.keyring
$rgw_env
ENV
}

start() {
  if [ "$(id -u)" != 0 ]; then echo "ceph.sh: needs root (apt-get, ceph daemons)" >&2; exit 1; fi
  choose_ports
  # already running: only the probe (the ceph CLI costs ~1 s a call)
  if alive mon.a && alive mgr.x && alive osd.0 && [ -s "$W/ceph.client.opencsbs.keyring" ] && [ -s "$W/ceph.client.cinder.keyring" ] \
      && echo probe | timeout 10 rados --id opencsbs -p rbd put ceph-sh-probe - 2>/dev/null; then
    rados --id opencsbs -p rbd rm ceph-sh-probe
    link_bindings "$ROOT/.venv"; rgw; ts "already running (CEPH_CONF=$CONF)"; return 0
  fi
  install_packages
  mkdir -p "$W"/{run,log,mon,osd,mgr}
  [ -f "$CONF" ] || write_conf

  # monitor
  if [ ! -f "$W/mon/ceph-a/done" ]; then
    rm -rf "$W/mon/ceph-a" "$W/mon.keyring" "$W/ceph.client.admin.keyring"
    ceph-authtool --create-keyring "$W/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$W/ceph.client.admin.keyring" --gen-key -n client.admin --cap mon 'allow *' \
      --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$W/mon.keyring" --import-keyring "$W/ceph.client.admin.keyring" >/dev/null
    monmaptool --create --addv a "[v2:127.0.0.1:$MON_PORT2,v1:127.0.0.1:$MON_PORT]" \
      --fsid "$(awk '$1=="fsid"{print $3}' "$CONF")" "$W/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$W/monmap" --keyring "$W/mon.keyring"
    touch "$W/mon/ceph-a/done"
  fi
  alive mon.a || ceph-mon -i a
  c -s >/dev/null
  ts "mon up"
  # manager: Cinder's RBD driver reads pool usage through it (ceph df)
  if [ ! -f "$W/mgr/ceph-x/keyring" ]; then
    mkdir -p "$W/mgr/ceph-x"
    c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' > "$W/mgr/ceph-x/keyring"
  fi
  alive mgr.x || ceph-mgr -i x
  # the OSD: bluestore on $osd_data/block
  local d=$W/osd/ceph-0 up=0
  if [ ! -f "$d/done" ]; then
    rm -rf "$d"; mkdir -p "$d"
    local uuid key id
    uuid=$(uuidgen); key=$(ceph-authtool --gen-print-key)
    id=$(echo "{\"cephx_secret\": \"$key\"}" | c osd new "$uuid" 0 -i -)
    [ "$id" = 0 ] || { echo "ceph osd new returned id $id, expected 0" >&2; exit 1; }
    ceph-authtool --create-keyring "$d/keyring" --name osd.0 --add-key "$key" >/dev/null
    ceph-osd -i 0 --mkfs --osd-uuid "$uuid" > "$W/log/osd.0-mkfs.log" 2>&1 || { tail -20 "$W/log/osd.0-mkfs.log" >&2; exit 1; }
    touch "$d/done"
  fi
  alive osd.0 || ceph-osd -i 0
  for _ in $(seq 1 120); do
    up=$(c osd stat -f json | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])')
    [ "$up" -ge 1 ] && break; sleep 0.5
  done
  [ "$up" -ge 1 ] || { echo "the OSD did not come up (see $W/log/ceph-osd.0.log)" >&2; exit 1; }
  ts "osd up"
  # clone v2 (Cinder: volumes from snapshots whose parents can be deleted)
  c osd set-require-min-compat-client mimic >/dev/null 2>&1 || true
  pool volumes
  pool rbd
  user cinder mon 'profile rbd' osd 'profile rbd pool=volumes' mgr 'profile rbd pool=volumes'
  user opencsbs mon 'profile rbd' osd 'profile rbd pool=volumes, profile rbd pool=rbd' \
    mgr 'profile rbd pool=volumes, profile rbd pool=rbd'
  # ready = an object write as client.opencsbs succeeds in both pools (their PGs are active)
  local ok=0
  for _ in $(seq 1 60); do
    if echo probe | timeout 10 rados --id opencsbs -p rbd put ceph-sh-probe - 2>/dev/null \
        && echo probe | timeout 10 rados --id opencsbs -p volumes put ceph-sh-probe - 2>/dev/null; then
      rados --id opencsbs -p rbd rm ceph-sh-probe; rados --id opencsbs -p volumes rm ceph-sh-probe; ok=1; break
    fi
    sleep 0.5
  done
  [ $ok = 1 ] || { echo "pools volumes/rbd not writable as client.opencsbs" >&2; c -s >&2 || true; exit 1; }
  link_bindings "$ROOT/.venv"
  rgw
  ts "READY: $(c health 2>/dev/null) (CEPH_CONF=$CONF)"
}

stop() {
  local f p
  if [ -d "$W/run" ]; then
    for f in "$W"/run/client.rgw.*.pid "$W"/run/mgr.*.pid "$W"/run/osd.*.pid "$W"/run/mon.*.pid; do
      [ -f "$f" ] || continue
      p=$(cat "$f")
      if kill -TERM "$p" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$p" 2>/dev/null || true
      fi
      rm -f "$f"
    done
  fi
  rm -rf "$W" "$ENV_FILE"
}

case "${1:-start}" in
  start) start ;;
  rgw) rgw ;;
  stop) stop ;;
  link) shift; for v in "$@"; do link_bindings "$v"; done ;;  # link VENV...: the bindings into other venvs
  *) echo "usage: $0 start|rgw|stop|link VENV..." >&2; exit 2 ;;
esac
