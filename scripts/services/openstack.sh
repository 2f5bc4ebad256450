#!/usr/bin/env bash
# A real, small OpenStack for the OpenStack driver's tests, all on 127.0.0.1:
#   Keystone 30 (:5000), Placement 16 (:8778), Nova 34 (:8774) with the fake virt driver on two compute hosts
#   (ci-host in AZ "az1", ci-host-2 in AZ "az-nobackup"), Cinder 29 (:8776) with Cinder's fake volume driver,
#   read-only Neutron and Glance stand-ins (:9696, :9292) and Ironic (:6385, fake-hardware) when its venv installed.
#   Databases: a throw-away PostgreSQL cluster on :55432 (fsync off). Messaging: the machine's RabbitMQ on :5672
#   (guest/guest) when it answers, else one started here.
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
PGPORT=55432
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
ENV_FILE=$WORK/env/openstack.env
KV=$VENVS/keystone/bin NV=$VENVS/nova/bin CV=$VENVS/cinder/bin IV=$VENVS/ironic/bin
export PYTHONWARNINGS=ignore
T0=$(date +%s)
ts() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
waitport() {  # port [tries of 0.2 s]
  for _ in $(seq 1 "${2:-300}"); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.2; done
  echo "port $1 not answering" >&2; return 1
}
psql_() { psql -h 127.0.0.1 -p $PGPORT -U postgres "$@"; }

healthy() {
  [ -f "$S/ready" ] || return 1
  for f in "$S"/run/*.pid; do kill -0 "$(cat "$f")" 2>/dev/null || return 1; done
  for p in 5000 8774 8776 8778 9696 9292; do curl -s -m 2 -o /dev/null "http://127.0.0.1:$p/" || return 1; done
}

write_env() {
  mkdir -p "$WORK/env"
  cat > "$OSW/clouds.yaml" <<YAML
clouds:
  opencsbs-admin:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: admin, password: s3cret, project_name: admin,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  opencsbs-service:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: opencsbs, password: s3cret, project_name: service,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  opencsbs-demo:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: csbs-demo, password: s3cret, project_name: csbs-demo,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  opencsbs-bench:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: csbs-demo, password: s3cret, project_name: csbs-bench,
           user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
YAML
  cat > "$ENV_FILE" <<ENV
export OPENCSBS_TEST_OS_CLOUDS_YAML=$OSW/clouds.yaml
export OPENCSBS_TEST_OS_AUTH_URL=http://127.0.0.1:5000/v3
export OPENCSBS_TEST_OS_STACK_DIR=$S
export OPENCSBS_TEST_OS_IRONIC=$( [ -f "$S/run/ironic.pid" ] && echo 1 || echo 0 )
ENV
}

start_rabbit() {  # sets TRANSPORT_URL
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    TRANSPORT_URL="rabbit://guest:guest@127.0.0.1:5672/"
    return
  fi
  command -v rabbitmq-server >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >/dev/null; }
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
  if [ -z "$PGBIN" ] || ! command -v psql >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$PGBIN" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
  command -v psql >/dev/null || { echo "psql not found" >&2; exit 1; }
  "$CONF/install-venvs.sh" "$VENVS"
  ts "venvs ready"
  mkdir -p "$S"/{run,log,etc,keystone,ironic/lock,nova/state/instances,nova/state2/instances,nova/lock,cinder/state,cinder/lock,pg}
  start_rabbit
  for f in keystone placement nova nova-compute2 cinder ironic; do
    [ -f "$CONF/conf/$f.conf" ] || continue
    sed -e "s#@S@#$S#g; s#@VENVS@#$VENVS#g; s#@PGPORT@#$PGPORT#g; s#@TRANSPORT_URL@#$TRANSPORT_URL#g" \
      "$CONF/conf/$f.conf" > "$S/etc/$f.conf"
  done
  cp "$VENVS/nova/etc/nova/api-paste.ini" "$S/nova/api-paste.ini"
  # oslo.config parses sys.argv when the WSGI app loads: hide gunicorn's arguments
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa\n' > "$S/etc/ks_wsgi.py"
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom nova.wsgi.osapi_compute import application  # noqa\n' > "$S/etc/nova_wsgi.py"

  # PostgreSQL: throw-away cluster, no durability
  chown postgres:postgres "$S/pg"
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
    --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ \
    --bootstrap-public-url http://127.0.0.1:5000/v3/ >/dev/null 2>&1
  OS_KEYSTONE_CONFIG_FILES=$S/etc/keystone.conf PYTHONPATH=$S/etc svc keystone $KV/gunicorn -b 127.0.0.1:5000 \
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
  waitport 5000
  ts "keystone up"
  # the catalog must exist before the nova services start (they read it once per process)
  $NV/python "$CONF/bootstrap.py" identity
  svc stubs $NV/python "$CONF/stubs.py" 127.0.0.1 9696 9292
  ts "identity + catalog"
  for p in "${pids[@]}"; do wait "$p" || { tail -n 20 "$S"/log/*dbsync.log; exit 1; }; done
  ts "db schemas"

  OS_PLACEMENT_CONFIG_DIR=$S/etc svc placement $NV/gunicorn -b 127.0.0.1:8778 -w 1 --threads 4 --timeout 120 \
    --no-control-socket placement.wsgi.api:application
  # nova-api: the FIRST file in OS_NOVA_CONFIG_FILES is the paste config
  OS_NOVA_CONFIG_DIR=$S/nova OS_NOVA_CONFIG_FILES="$S/nova/api-paste.ini;$S/etc/nova.conf" PYTHONPATH=$S/etc \
    svc nova-api $NV/gunicorn -b 127.0.0.1:8774 -w 1 --threads 4 --timeout 120 --no-control-socket nova_wsgi:application
  svc nova-conductor $NV/nova-conductor --config-file "$S/etc/nova.conf"
  svc nova-scheduler $NV/nova-scheduler --config-file "$S/etc/nova.conf"
  svc nova-compute $NV/nova-compute --config-file "$S/etc/nova.conf"
  svc nova-compute2 $NV/nova-compute --config-file "$S/etc/nova.conf" --config-file "$S/etc/nova-compute2.conf"
  svc cinder-api $CV/cinder-api --config-file "$S/etc/cinder.conf"
  svc cinder-scheduler $CV/cinder-scheduler --config-file "$S/etc/cinder.conf"
  PYTHONPATH=$CONF svc cinder-volume $CV/cinder-volume --config-file "$S/etc/cinder.conf"
  if [ -f "$S/etc/ironic.conf" ] && [ -f "$VENVS/ironic/.ok" ]; then
    svc ironic $IV/ironic --config-file "$S/etc/ironic.conf"
  fi
  waitport 8778; waitport 8774; waitport 8776
  ts "APIs answer"
  # map both compute hosts into cell1 now (the scheduler's periodic discovery lags ~20 s)
  local cn hm
  for _ in $(seq 1 240); do
    cn=$(psql_ -Atc "select count(*) from compute_nodes where deleted=0" nova)
    hm=$(psql_ -Atc "select count(*) from host_mappings" nova_api)
    [ "$hm" -ge 2 ] && break
    if [ "$cn" -ge 1 ]; then $NM cell_v2 discover_hosts >/dev/null 2>&1 || true; fi
    sleep 0.5
  done
  ts "compute hosts mapped"
  $NV/python - <<'PY'
import time, warnings, openstack; warnings.filterwarnings("ignore")
c = openstack.connect(auth_url="http://127.0.0.1:5000/v3", username="admin", password="s3cret", project_name="admin",
                      user_domain_id="default", project_domain_id="default", region_name="RegionOne")
for _ in range(240):
    try:
        ns = [s.state for s in c.compute.services()]; cs = [s.state for s in c.block_storage.services()]
        if len(ns) >= 4 and len(cs) >= 2 and set(ns + cs) == {"up"} and len(list(c.compute.hypervisors())) >= 2:
            break
    except Exception:
        pass
    time.sleep(0.5)
else:
    raise SystemExit("nova/cinder services not up after 120 s")
PY
  $NV/python "$CONF/bootstrap.py" fixtures
  if [ -f "$S/run/ironic.pid" ]; then waitport 6385; ts "ironic answers"; fi
  touch "$S/ready"
  write_env
  ts "READY"
}

stop() {
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
