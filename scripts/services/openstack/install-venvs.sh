#!/usr/bin/env bash
# Creates the OpenStack service virtualenvs under $1 (keystone, nova (+placement), cinder, ironic) in parallel,
# pinned by the constraints files next to this script. Idempotent: a venv with its .ok marker is kept.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${1:?usage: install-venvs.sh DIR}
mkdir -p "$D"
export PIP_DISABLE_PIP_VERSION_CHECK=1
want() { [ ! -f "$D/$1/.ok" ]; }
mk() {  # name constraints packages...
  local name=$1 cons=$2; shift 2
  rm -rf "$D/$name"
  python3 -m venv "$D/$name" && "$D/$name/bin/pip" install -q -c "$HERE/$cons" "$@" && touch "$D/$name/.ok"
}
pids=()
want keystone && { mk keystone constraints-keystone.txt 'keystone==30.0.0' gunicorn psycopg2-binary > "$D/keystone.log" 2>&1 & pids+=($!); }
want nova && { mk nova constraints-nova.txt 'nova==34.0.0' 'openstack-placement==16.0.0' gunicorn psycopg2-binary openstacksdk > "$D/nova.log" 2>&1 & pids+=($!); }
want cinder && { mk cinder constraints-cinder.txt 'cinder==29.0.0' fixtures psycopg2-binary > "$D/cinder.log" 2>&1 & pids+=($!); }
want ironic && { mk ironic constraints-nova.txt 'ironic==39.0.0' gunicorn psycopg2-binary > "$D/ironic.log" 2>&1 & pids+=($!); }
fail=0
for p in "${pids[@]:-}"; do [ -n "$p" ] && { wait "$p" || fail=1; }; done
[ $fail = 0 ] || { tail -5 "$D"/*.log; exit 1; }
