#!/usr/bin/env bash
# A real Keystone (PyPI keystone 30.0.0, SQLite, fernet tokens) for the identity tests, on 127.0.0.1:35357.
#
# OPENCSBS_KEYSTONE_PORT=N|auto and OPENCSBS_TEST_KEYSTONE_CSBS_PORT=N|auto: Keystone on port N (or a free port), and
# the catalog's data-protect endpoint on port N (or a free one) for the opencsbs test server the tests start under
# it; so two checkouts (two OPENCSBS_WORK) run their own Keystones side by side. The ports chosen are kept in
# $OPENCSBS_WORK/keystone/ports (a restart reuses them) and go into keystone.env. Unset: 35357 and 35399.
#
#   scripts/services/keystone.sh start   # install (first time, ~1 min), bootstrap, start; fast when already done
#   scripts/services/keystone.sh stop
#
# It bootstraps an admin, two projects (csbs-alpha, csbs-beta), users csbs-reader / csbs-member / csbs-admin
# (reader / member / admin on csbs-alpha), csbs-other (member on csbs-beta), the service user opencsbs (role
# service on project service), and a catalog entry of type data-protect pointing at the opencsbs test server
# http://127.0.0.1:$OPENCSBS_TEST_KEYSTONE_CSBS_PORT/v1/$(project_id)s. Writes $OPENCSBS_WORK/env/keystone.env.
# The passwords are fixed test values: this Keystone binds 127.0.0.1 only and holds nothing else.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${OPENCSBS_WORK:-$ROOT/.work}
D=$WORK/keystone
PORTS_FILE=$D/ports
# shellcheck source=scripts/services/lib/ports.sh
. "$HERE/lib/ports.sh"
choose_ports() {  # PORT, CSBS_PORT and URL, from the variables or this checkout's earlier choice
  local want="${OPENCSBS_KEYSTONE_PORT:-35357} ${OPENCSBS_TEST_KEYSTONE_CSBS_PORT:-35399}"
  if [ -f "$PORTS_FILE" ] && [ "$(head -1 "$PORTS_FILE")" = "want=$want" ]; then
    . <(tail -n +2 "$PORTS_FILE")
  else
    read -r PORT CSBS_PORT <<<"$want"
    [ "$PORT" = auto ] && PORT=$(free_port)
    [ "$CSBS_PORT" = auto ] && CSBS_PORT=$(free_port)
    mkdir -p "$D"; printf 'want=%s\nPORT=%s\nCSBS_PORT=%s\n' "$want" "$PORT" "$CSBS_PORT" > "$PORTS_FILE"
  fi
  URL=http://127.0.0.1:$PORT/v3
}
PW=csbs-test-pw
export PYTHONWARNINGS=ignore

running() { [ -f "$D/gunicorn.pid" ] && kill -0 "$(cat "$D/gunicorn.pid")" 2>/dev/null; }

stop() {
  if running; then
    pid=$(cat "$D/gunicorn.pid")
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$D/gunicorn.pid"
}

install() {
  mkdir -p "$D"
  if [ ! -x "$D/venv/bin/keystone-manage" ] || [ ! -x "$D/venv/bin/gunicorn" ]; then
    python3 -m venv "$D/venv"
    "$D/venv/bin/pip" install -q 'keystone==30.0.0' 'gunicorn>=22'
  fi
  cat > "$D/keystone.conf" <<CONF
[DEFAULT]
log_file = $D/keystone.log
[database]
connection = sqlite:///$D/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $D/fernet-keys
[fernet_receipts]
key_repository = $D/fernet-keys
[credential]
key_repository = $D/credential-keys
[identity]
password_hash_rounds = 4
[cache]
enabled = true
backend = oslo_cache.dict
CONF
  # oslo.config parses sys.argv when the app loads: hide gunicorn's arguments from it.
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa\n' > "$D/ks_wsgi.py"
}

bootstrap() {
  # the identity endpoints of the catalog carry the port: a Keystone bootstrapped on another port starts over
  [ -f "$D/bootstrapped" ] && [ "$(cat "$D/bootstrapped")" = "$URL" ] && return 0
  stop   # a Keystone still serving the database about to be made again
  rm -f "$D/keystone.db"
  local km="$D/venv/bin/keystone-manage --config-file $D/keystone.conf"
  $km db_sync
  $km fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  $km credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  $km bootstrap --bootstrap-password "$PW" --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-role-name admin --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url "$URL/" --bootstrap-internal-url "$URL/" --bootstrap-public-url "$URL/"
  echo "$URL" > "$D/bootstrapped"
}

start() {
  choose_ports
  install
  bootstrap
  if ! running; then
    OS_KEYSTONE_CONFIG_FILES=$D/keystone.conf PYTHONPATH=$D setsid "$D/venv/bin/gunicorn" -b "127.0.0.1:$PORT" \
      -w 1 --threads 8 --timeout 60 --no-control-socket --pid "$D/gunicorn.pid" --daemon \
      --error-logfile "$D/gunicorn.log" ks_wsgi:application </dev/null >/dev/null 2>&1
  fi
  for _ in $(seq 1 150); do curl -sf -m 2 -o /dev/null "$URL" && break; sleep 0.2; done
  curl -sf -m 5 -o /dev/null "$URL"
  "$D/venv/bin/python" "$HERE/keystone_setup.py" "$URL" "$PW" "http://127.0.0.1:$CSBS_PORT/v1/\$(project_id)s" \
    > "$D/ids.env"
  mkdir -p "$WORK/env"
  {
    echo "export OPENCSBS_TEST_KEYSTONE_URL=$URL"
    echo "export OPENCSBS_TEST_KEYSTONE_PASSWORD=$PW"
    echo "export OPENCSBS_TEST_KEYSTONE_CSBS_PORT=$CSBS_PORT"
    cat "$D/ids.env"
  } > "$WORK/env/keystone.env"
  echo "keystone ready at $URL"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
