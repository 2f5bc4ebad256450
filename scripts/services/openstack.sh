#!/usr/bin/env bash
# A real, small OpenStack for the OpenStack driver's tests, all on 127.0.0.1:
#   Keystone 30 (:5000), Placement 16 (:8778), Nova 34 (:8774) with the fake virt driver on two compute hosts
#   (ci-host in AZ "az1", ci-host-2 in AZ "az-nobackup"), Cinder 29 (:8776) with Cinder's fake volume driver,
#   read-only Neutron and Glance stand-ins (:9696, :9292) and Ironic (:6385, fake-hardware) when its venv installed.
#   Databases: a throw-away PostgreSQL cluster on :55432 (fsync off). Messaging: the machine's RabbitMQ on :5672
#   (guest/guest) when it answers, in a virtual host of this checkout's own (opencsbs-<hash of $OPENCSBS_WORK>, made
#   with rabbitmqctl and deleted by stop), else one started here.
#
#   OPENCSBS_OPENSTACK_PORTS=auto|N: the eight ports above (Keystone, Nova, Cinder, Placement, Neutron, Glance,
#   Ironic, PostgreSQL) are free ports (auto) or N, N+1, ..., N+7, in that order, so that two checkouts (two
#   OPENCSBS_WORK) run their own stacks side by side. The choice is kept in $OPENCSBS_WORK/openstack/ports (a
#   running stack keeps its ports) and reaches the tests through clouds.yaml and openstack.env.
#   With Ceph (scripts/services/ceph.sh started first, $OPENCSBS_WORK/env/ceph.env): Cinder gets a second backend
#   "ceph" (the real RBD driver on pool "volumes", volume type "rbd"; every other type stays on the fake backend) and
#   Nova a third compute host "kvm-host" (AZ az-kvm) with the real libvirt driver on a private libvirtd in its own
#   mount namespace (socket $OPENCSBS_WORK/openstack/stack/libvirt/sock/libvirt-sock), so a server booted from an
#   RBD volume runs under QEMU. Without Ceph the stack starts without these parts (and says so).
#
#   scripts/services/openstack.sh start   # install venvs (once, ~3 min), start (~1 min), write env/openstack.env
#   scripts/services/openstack.sh stop    # stop everything started here, delete the stack state
#
# Venvs live in $OPENCSBS_WORK/openstack/venvs (kept between runs), state in $OPENCSBS_WORK/openstack/stack.
# start is idempotent: a stack that already answers is reused. Needs root (su postgres for initdb).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${OPENCSBS_WORK:-$ROOT/.work}
OSW=$WORK/openstack
S=$OSW/stack
VENVS=$OSW/venvs
CONF=$HERE/openstack
PORTS_FILE=$OSW/ports
# shellcheck source=scripts/services/lib/ports.sh
. "$HERE/lib/ports.sh"
# KS_PORT NOVA_PORT CINDER_PORT PLACEMENT_PORT NEUTRON_PORT GLANCE_PORT IRONIC_PORT PGPORT, from this checkout's
# earlier choice (fresh=1: choose again unless fixed) or from OPENCSBS_OPENSTACK_PORTS
choose_ports() {
  local want=${OPENCSBS_OPENSTACK_PORTS:-fixed} fresh=${1:-0} ports i
  if [ "$fresh" = 0 ] && [ -f "$PORTS_FILE" ] && [ "$(head -1 "$PORTS_FILE")" = "want=$want" ]; then
    ports=$(sed -n 2p "$PORTS_FILE")
  else
    case "$want" in
      fixed) ports="5000 8774 8776 8778 9696 9292 6385 55432" ;;
      auto) ports=""; for i in 1 2 3 4 5 6 7 8; do ports="$ports $(free_port)"; done ;;
      *[!0-9]*|"") echo "OPENCSBS_OPENSTACK_PORTS: '$want' is neither auto nor a port number" >&2; exit 2 ;;
      *) ports=""; for i in 0 1 2 3 4 5 6 7; do ports="$ports $((want + i))"; done ;;
    esac
    mkdir -p "$OSW"; printf 'want=%s\n%s\n' "$want" "$ports" > "$PORTS_FILE"
  fi
  read -r KS_PORT NOVA_PORT CINDER_PORT PLACEMENT_PORT NEUTRON_PORT GLANCE_PORT IRONIC_PORT PGPORT <<<"$ports"
  AUTH_URL=http://127.0.0.1:$KS_PORT/v3
  export KS_PORT NOVA_PORT CINDER_PORT PLACEMENT_PORT NEUTRON_PORT GLANCE_PORT IRONIC_PORT AUTH_URL
}
choose_ports
VHOST=opencsbs-$(printf %s "$WORK" | sha1sum | cut -c1-10)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
ENV_FILE=$WORK/env/openstack.env
KV=$VENVS/keystone/bin NV=$VENVS/nova/bin CV=$VENVS/cinder/bin IV=$VENVS/ironic/bin
CEPH_ENV=$WORK/env/ceph.env
LV=$S/libvirt
# shellcheck source=scripts/services/lib/libvirtd.sh
. "$HERE/lib/libvirtd.sh"
LIBVIRT_URI=$(private_libvirtd_uri "$LV")
LIBVIRT_PKGS="libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc qemu-system-x86 qemu-utils qemu-block-extra"
export PYTHONWARNINGS=ignore
T0=$(date +%s)
ts() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
waitport() {  # port [tries of 0.2 s]
  for _ in $(seq 1 "${2:-300}"); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.2; done
  echo "port $1 not answering" >&2; return 1
}
psql_() { psql -h 127.0.0.1 -p $PGPORT -U postgres "$@"; }

# true when ceph.sh's cluster answers to client.cinder: the stack then gets its RBD parts
ceph_up() {
  [ -f "$CEPH_ENV" ] || return 1
  # shellcheck disable=SC1090
  CEPH_CONF=$(. "$CEPH_ENV"; echo "$OPENCSBS_TEST_CEPH_CONF")
  timeout 20 ceph --connect-timeout 15 -c "$CEPH_CONF" --id cinder health >/dev/null 2>&1
}

healthy() {
  [ -f "$S/ready" ] || return 1
  # a stack started without Ceph is not the one wanted once Ceph runs (and the other way round)
  if ceph_up; then [ -f "$S/rbd" ] || return 1; else [ ! -f "$S/rbd" ] || return 1; fi
  if [ -f "$S/rbd" ]; then virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1 || return 1; fi
  for f in "$S"/run/*.pid; do kill -0 "$(cat "$f")" 2>/dev/null || return 1; done
  for p in $KS_PORT $NOVA_PORT $CINDER_PORT $PLACEMENT_PORT $NEUTRON_PORT $GLANCE_PORT; do curl -s -m 2 -o /dev/null "http://127.0.0.1:$p/" || return 1; done
}

write_env() {
  mkdir -p "$WORK/env"
  cat > "$OSW/clouds.yaml" <<YAML
clouds:
  opencsbs-admin:
    auth: {auth_url: "$AUTH_URL", username: admin, password: s3cret, project_name: admin,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  opencsbs-service:
    auth: {auth_url: "$AUTH_URL", username: opencsbs, password: s3cret, project_name: service,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  opencsbs-demo:
    auth: {auth_url: "$AUTH_URL", username: csbs-demo, password: s3cret, project_name: csbs-demo,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  opencsbs-bench:
    auth: {auth_url: "$AUTH_URL", username: csbs-demo, password: s3cret, project_name: csbs-bench,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
YAML
  cat > "$ENV_FILE" <<ENV
export OPENCSBS_TEST_OS_CLOUDS_YAML=$OSW/clouds.yaml
export OPENCSBS_TEST_OS_AUTH_URL=$AUTH_URL
export OPENCSBS_TEST_OS_STACK_DIR=$S
export OPENCSBS_TEST_OS_IRONIC=$( [ -f "$S/run/ironic.pid" ] && echo 1 || echo 0 )
ENV
  if [ -f "$S/rbd" ]; then
    cat >> "$ENV_FILE" <<ENV
export OPENCSBS_TEST_OS_RBD=1
export OPENCSBS_TEST_OS_RBD_AZ=az-kvm
export OPENCSBS_TEST_OS_RBD_HOST=kvm-host
export OPENCSBS_TEST_OS_RBD_VOLUME_TYPE=rbd
export OPENCSBS_TEST_OS_RBD_BACKEND=ceph
export OPENCSBS_TEST_OS_RBD_SECRET_UUID=$(cat "$S/rbd")
export OPENCSBS_TEST_OS_LIBVIRT_URI='$LIBVIRT_URI'
ENV
  else
    echo "export OPENCSBS_TEST_OS_RBD=0" >> "$ENV_FILE"
  fi
}

# The Ceph side of the stack: packages, bindings, libvirt-python, the private libvirtd and its ceph secret,
# cinder.conf's [ceph] backend and nova-kvm.conf. Sets RBD=1.
rbd_setup() {
  local have
  have=$(dpkg-query -W -f='${Status}\n' $LIBVIRT_PKGS 2>/dev/null | grep -c '^install ok installed$' || true)
  if [ "$have" != "$(echo $LIBVIRT_PKGS | wc -w)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $LIBVIRT_PKGS >/dev/null 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $LIBVIRT_PKGS >/dev/null; }
  fi
  bash "$HERE/ceph.sh" link "$VENVS/cinder" "$VENVS/nova"
  "$NV/python" -c 'import libvirt' 2>/dev/null || "$NV/pip" install -q libvirt-python
  local secret virt_type=kvm
  secret=$(uuidgen)
  [ -w /dev/kvm ] || { virt_type=qemu; echo "no /dev/kvm: kvm-host runs its guests under TCG (virt_type = qemu)"; }
  private_libvirtd_up "$LV"
  cat > "$S/etc/ceph-secret.xml" <<XML
<secret ephemeral='no' private='no'><uuid>$secret</uuid><usage type='ceph'><name>client.cinder secret</name></usage></secret>
XML
  virsh -c "$LIBVIRT_URI" secret-define "$S/etc/ceph-secret.xml" >/dev/null
  ceph-authtool -p -n client.cinder "$(dirname "$CEPH_CONF")/ceph.client.cinder.keyring" > "$S/etc/cinder.key"
  virsh -c "$LIBVIRT_URI" secret-set-value --secret "$secret" --file "$S/etc/cinder.key" >/dev/null
  rm -f "$S/etc/cinder.key"
  sed -i "s/^enabled_backends = .*/enabled_backends = fake,ceph/" "$S/etc/cinder.conf"
  sed -e "s#@CEPH_CONF@#$CEPH_CONF#g; s#@SECRET_UUID@#$secret#g" "$CONF/conf/cinder-ceph.conf" >> "$S/etc/cinder.conf"
  sed -e "s#@S@#$S#g; s#@VENVS@#$VENVS#g; s#@SECRET_UUID@#$secret#g; s#@VIRT_TYPE@#$virt_type#g; s#@LIBVIRT_SOCK@#$LV/sock/libvirt-sock#g" \
    "$CONF/conf/nova-kvm.conf" > "$S/etc/nova-kvm.conf"
  mkdir -p "$S/nova/state-kvm/instances"
  echo "$secret" > "$S/rbd"
  RBD=1
}

start_rabbit() {  # sets TRANSPORT_URL
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    # this checkout's own virtual host: another stack's queues (conductor, scheduler, compute.HOST) never mix in
    if timeout 60 rabbitmqctl add_vhost "$VHOST" >/dev/null 2>&1 || timeout 30 rabbitmqctl list_vhosts 2>/dev/null | grep -qx "$VHOST"; then
      timeout 60 rabbitmqctl set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
      echo "$VHOST" > "$S/etc/rabbitmq-vhost"
      TRANSPORT_URL="rabbit://guest:guest@127.0.0.1:5672/$VHOST"
    else
      echo "rabbitmqctl cannot add a virtual host: the stack uses the machine's RabbitMQ's default one (/)"
      TRANSPORT_URL="rabbit://guest:guest@127.0.0.1:5672/"
    fi
    return
  fi
  command -v rabbitmq-server >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q rabbitmq-server >/dev/null; }
  mkdir -p "$S/rmq"; chown rabbitmq:rabbitmq "$S/rmq"
  cat > "$S/etc/rabbitmq-env.sh" <<RMQ
export RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_DIST_PORT=25672 RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_MNESIA_BASE=$S/rmq/mnesia RABBITMQ_LOG_BASE=$S/rmq/log
RMQ
  # shellcheck disable=SC1091
  . "$S/etc/rabbitmq-env.sh"
  rabbitmq-server -detached > "$S/log/rabbitmq-start.log" 2>&1
  for _ in $(seq 1 60); do rabbitmqctl -n rabbit@localhost await_startup --timeout 15 >/dev/null 2>&1 && break; sleep 1; done
  rabbitmqctl -n rabbit@localhost add_user openstack openstack >/dev/null 2>&1 || true
  rabbitmqctl -n rabbit@localhost set_permissions openstack '.*' '.*' '.*' >/dev/null 2>&1
  TRANSPORT_URL="rabbit://openstack:openstack@127.0.0.1:5672/"
}

svc() {  # name command...   (own process group, so stop can signal the whole tree)
  local name=$1; shift
  setsid "$@" </dev/null >"$S/log/$name.out" 2>&1 &
  echo $! > "$S/run/$name.pid"
}

start() {
  if healthy; then write_env; ts "already running"; return 0; fi
  if [ "$(id -u)" != 0 ]; then echo "openstack.sh: needs root (su postgres for its PostgreSQL cluster)" >&2; exit 1; fi
  [ -e "$S" ] && stop
  choose_ports 1  # auto: ports free now (an earlier choice may have been taken since)
  if [ -z "$PGBIN" ] || ! command -v psql >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q postgresql >/dev/null \
      || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q postgresql >/dev/null; }
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$PGBIN" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
  command -v psql >/dev/null || { echo "psql not found" >&2; exit 1; }
  "$CONF/install-venvs.sh" "$VENVS"
  ts "venvs ready"
  RBD=0
  ceph_up || echo "no Ceph (scripts/services/ceph.sh not started): no RBD backend, no libvirt compute host; the RBD tests skip"
  mkdir -p "$S"/{run,log,etc,keystone,ironic/lock,nova/state/instances,nova/state2/instances,nova/lock,cinder/state,cinder/lock,pg}
  start_rabbit
  for f in keystone placement nova nova-compute2 cinder ironic; do
    [ -f "$CONF/conf/$f.conf" ] || continue
    sed -e "s#@S@#$S#g; s#@VENVS@#$VENVS#g; s#@PGPORT@#$PGPORT#g; s#@TRANSPORT_URL@#$TRANSPORT_URL#g" \
      -e "s#@AUTH_URL@#$AUTH_URL#g; s#@CINDER_PORT@#$CINDER_PORT#g; s#@IRONIC_PORT@#$IRONIC_PORT#g" \
      "$CONF/conf/$f.conf" > "$S/etc/$f.conf"
  done
  if ceph_up; then rbd_setup; ts "ceph backend + private libvirtd ($LIBVIRT_URI)"; fi
  cp "$VENVS/nova/etc/nova/api-paste.ini" "$S/nova/api-paste.ini"
  # oslo.config parses sys.argv when the WSGI app loads: hide gunicorn's arguments
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa\n' > "$S/etc/ks_wsgi.py"
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom nova.wsgi.osapi_compute import application  # noqa\n' > "$S/etc/nova_wsgi.py"

  # PostgreSQL: throw-away cluster, no durability
  chown postgres:postgres "$S/pg"
  # a cluster of an earlier stack may still be letting go of the port: wait for it (at most 30 s)
  for _ in $(seq 150); do ss -Htln "sport = :$PGPORT" | grep -q . || break; sleep 0.2; done
  su postgres -c "$PGBIN/initdb -D $S/pg/data -A trust -U postgres --no-sync" > "$S/log/initdb.log" 2>&1
  su postgres -c "$PGBIN/pg_ctl -D $S/pg/data -l $S/pg/pg.log -w -t 60 start -o '-c listen_addresses=127.0.0.1 -p $PGPORT \
    -c unix_socket_directories=$S/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300'" >/dev/null
  for db in keystone nova_api nova_cell0 nova placement cinder ironic; do psql_ -qc "create database $db"; done
  ts "postgres up"

  # Keystone (one worker: its cache is in-process)
  local KM="$KV/keystone-manage --config-file $S/etc/keystone.conf"
  $KM db_sync
  $KM fernet_setup --keystone-user root --keystone-group root
  $KM credential_setup --keystone-user root --keystone-group root
  $KM bootstrap --bootstrap-password s3cret --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-role-name admin --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url "$AUTH_URL/" --bootstrap-internal-url "$AUTH_URL/" \
    --bootstrap-public-url "$AUTH_URL/" >/dev/null 2>&1
  OS_KEYSTONE_CONFIG_FILES=$S/etc/keystone.conf PYTHONPATH=$S/etc svc keystone $KV/gunicorn -b 127.0.0.1:$KS_PORT \
    -w 1 --threads 4 --timeout 60 --no-control-socket ks_wsgi:application
  # schemas in parallel while Keystone starts
  local NM="$NV/nova-manage --config-file $S/etc/nova.conf" pids=()
  ( $NV/placement-manage --config-file "$S/etc/placement.conf" db sync ) > "$S/log/placement-dbsync.log" 2>&1 & pids+=($!)
  ( $CV/cinder-manage --config-file "$S/etc/cinder.conf" db sync ) > "$S/log/cinder-dbsync.log" 2>&1 & pids+=($!)
  ( $NM api_db sync && $NM cell_v2 map_cell0 --database_connection postgresql+psycopg2://postgres@127.0.0.1:$PGPORT/nova_cell0 \
    && $NM cell_v2 create_cell --name cell1 && $NM db sync ) > "$S/log/nova-dbsync.log" 2>&1 & pids+=($!)
  if [ -f "$S/etc/ironic.conf" ] && [ -f "$VENVS/ironic/.ok" ]; then
    ( $IV/ironic-dbsync --config-file "$S/etc/ironic.conf" create_schema ) > "$S/log/ironic-dbsync.log" 2>&1 & pids+=($!)
  fi
  waitport $KS_PORT
  ts "keystone up"
  # the catalog must exist before the nova services start (they read it once per process)
  $NV/python "$CONF/bootstrap.py" identity
  svc stubs $NV/python "$CONF/stubs.py" 127.0.0.1 $NEUTRON_PORT $GLANCE_PORT
  ts "identity + catalog"
  for p in "${pids[@]}"; do wait "$p" || { tail -n 20 "$S"/log/*dbsync.log; exit 1; }; done
  ts "db schemas"

  OS_PLACEMENT_CONFIG_DIR=$S/etc svc placement $NV/gunicorn -b 127.0.0.1:$PLACEMENT_PORT -w 1 --threads 4 --timeout 120 \
    --no-control-socket placement.wsgi.api:application
  # nova-api: the FIRST file in OS_NOVA_CONFIG_FILES is the paste config
  OS_NOVA_CONFIG_DIR=$S/nova OS_NOVA_CONFIG_FILES="$S/nova/api-paste.ini;$S/etc/nova.conf" PYTHONPATH=$S/etc \
    svc nova-api $NV/gunicorn -b 127.0.0.1:$NOVA_PORT -w 1 --threads 4 --timeout 120 --no-control-socket nova_wsgi:application
  svc nova-conductor $NV/nova-conductor --config-file "$S/etc/nova.conf"
  svc nova-scheduler $NV/nova-scheduler --config-file "$S/etc/nova.conf"
  svc nova-compute $NV/nova-compute --config-file "$S/etc/nova.conf"
  svc nova-compute2 $NV/nova-compute --config-file "$S/etc/nova.conf" --config-file "$S/etc/nova-compute2.conf"
  if [ $RBD = 1 ]; then
    svc nova-compute-kvm $NV/nova-compute --config-file "$S/etc/nova.conf" --config-file "$S/etc/nova-kvm.conf"
  fi
  svc cinder-api $CV/cinder-api --config-file "$S/etc/cinder.conf"
  svc cinder-scheduler $CV/cinder-scheduler --config-file "$S/etc/cinder.conf"
  PYTHONPATH=$CONF svc cinder-volume $CV/cinder-volume --config-file "$S/etc/cinder.conf"
  if [ -f "$S/etc/ironic.conf" ] && [ -f "$VENVS/ironic/.ok" ]; then
    svc ironic $IV/ironic --config-file "$S/etc/ironic.conf"
  fi
  waitport $PLACEMENT_PORT; waitport $NOVA_PORT; waitport $CINDER_PORT
  ts "APIs answer"
  # map the compute hosts into cell1 now (the scheduler's periodic discovery lags ~20 s)
  local cn hm hosts=$((2 + RBD))
  for _ in $(seq 1 240); do
    cn=$(psql_ -Atc "select count(*) from compute_nodes where deleted=0" nova)
    hm=$(psql_ -Atc "select count(*) from host_mappings" nova_api)
    [ "$hm" -ge $hosts ] && break
    if [ "$cn" -ge 1 ]; then $NM cell_v2 discover_hosts >/dev/null 2>&1 || true; fi
    sleep 0.5
  done
  ts "compute hosts mapped"
  RBD=$RBD $NV/python - <<'PY'
import os, time, warnings, openstack; warnings.filterwarnings("ignore")
c = openstack.connect(auth_url=os.environ["AUTH_URL"], username="admin", password="s3cret", project_name="admin",
                      user_domain_id="default", project_domain_id="default", region_name="RegionOne")
rbd = os.environ["RBD"] == "1"
backends = {"fake", "ceph"} if rbd else {"fake"}
state = "starting"
for _ in range(360):
    try:
        ns = [s.state for s in c.compute.services()]; cs = [s.state for s in c.block_storage.services()]
        state = f"nova {ns}, cinder {cs}"
        if len(ns) >= 4 + rbd and len(cs) >= 2 + rbd and set(ns + cs) == {"up"} \
                and len(list(c.compute.hypervisors())) >= 2 + rbd:
            # Cinder schedules onto a backend only after its first stats report (until then every create fails
            # with "No valid backend was found")
            pools = {p.name.split("#")[-1] for p in c.block_storage.backend_pools()}
            state += f", backend pools {sorted(pools)}"
            if backends <= pools:
                break
    except Exception as e:
        state = repr(e)
    time.sleep(0.5)
else:
    raise SystemExit(f"nova/cinder services or cinder backends not ready after 180 s: {state}")
PY
  ts "services up, cinder backends reported"
  RBD=$RBD $NV/python "$CONF/bootstrap.py" fixtures
  if [ -f "$S/run/ironic.pid" ]; then waitport $IRONIC_PORT; ts "ironic answers"; fi
  touch "$S/ready"
  write_env
  ts "READY"
}

stop() {
  private_libvirtd_down "$LV"
  if [ -d "$S/run" ]; then
    for f in "$S"/run/*.pid; do [ -f "$f" ] && kill -TERM -- "-$(cat "$f")" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
      local alive=0
      for f in "$S"/run/*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break; sleep 0.2
    done
    for f in "$S"/run/*.pid; do [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true; done
  fi
  if [ -f "$S/etc/rabbitmq-env.sh" ]; then  # only a RabbitMQ this script started
    # shellcheck disable=SC1091
    . "$S/etc/rabbitmq-env.sh"; rabbitmqctl -n rabbit@localhost stop >/dev/null 2>&1 || true
  fi
  if [ -f "$S/etc/rabbitmq-vhost" ]; then  # this checkout's virtual host on the machine's RabbitMQ
    timeout 60 rabbitmqctl delete_vhost "$(cat "$S/etc/rabbitmq-vhost")" >/dev/null 2>&1 || true
  fi
  if [ -f "$S/pg/data/postmaster.pid" ]; then
    su postgres -c "$PGBIN/pg_ctl -D $S/pg/data -m immediate -w -t 30 stop" >/dev/null 2>&1 || true
  fi
  rm -rf "$S" "$ENV_FILE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
