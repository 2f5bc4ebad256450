#!/usr/bin/env bash
# The test command (README): installs opencsbs and its test dependencies into .venv, starts every component the
# tests talk to (scripts/services/*.sh: Keystone, an S3 server, libvirt + QEMU, Ceph, OpenStack, the SDK venv), runs
# pytest on SQLite and again on PostgreSQL (there only the tests that use the database), then stops what it started.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k protectable  # extra arguments go to pytest
#   OPENCSBS_TEST_SERVICES="s3" scripts/test.sh   # start only some components (others' tests skip, outside CI)
#   OPENCSBS_TEST_DBS="sqlite" scripts/test.sh    # one database only
#   OPENCSBS_TEST_PORTS=fixed scripts/test.sh     # the components' fixed ports (S3 :8333, Keystone :35357, ...)
#
# Every component this command starts listens on free ports, chosen once per checkout and kept under
# $OPENCSBS_WORK (OPENCSBS_TEST_PORTS=auto, the default; a component's own variable, such as
# OPENCSBS_KEYSTONE_PORT=35357, still wins), and libvirt and OpenStack's libvirtd are this checkout's own: two
# checkouts (two OPENCSBS_WORK, the default being each checkout's .work) run their suites at once.
#
# Under CI (CI set) a component that fails to start fails the run; elsewhere its tests skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export OPENCSBS_WORK=${OPENCSBS_WORK:-$ROOT/.work}
mkdir -p "$OPENCSBS_WORK/env" "$OPENCSBS_WORK/logs"
rm -f "$OPENCSBS_WORK"/env/*.env

case "${OPENCSBS_TEST_PORTS:-auto}" in
  auto)
    for v in OPENCSBS_TEST_S3_PORT OPENCSBS_KEYSTONE_PORT OPENCSBS_TEST_KEYSTONE_CSBS_PORT OPENCSBS_CEPH_MON_PORT \
             OPENCSBS_CEPH_MON_PORT2 OPENCSBS_RGW_PORT OPENCSBS_OPENSTACK_PORTS; do
      export "$v=${!v:-auto}"
    done ;;
  fixed) ;;
  *) echo "OPENCSBS_TEST_PORTS: '$OPENCSBS_TEST_PORTS' is neither auto nor fixed" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]'

# Start order matters: ceph before openstack (openstack.sh adds its RBD backend and libvirt compute host only when
# Ceph answers). Scripts not named here start last, in name order; OPENCSBS_TEST_SERVICES is put in this order too.
ORDER="postgres keystone s3 libvirt ceph openstack sdk"
ALL_SERVICES=$(ls scripts/services/*.sh 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.sh$//' | tr '\n' ' ')
WANTED=" ${OPENCSBS_TEST_SERVICES:-$ALL_SERVICES} "
SERVICES=""
for s in $ORDER $ALL_SERVICES; do
  case "$WANTED" in *" $s "*) case " $SERVICES " in *" $s "*) ;; *) SERVICES="$SERVICES $s" ;; esac ;; esac
done
STARTED=()
stop_all() {  # in reverse start order (openstack before the ceph its cinder-volume talks to)
  local i s
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    s=${STARTED[$i]}
    bash "scripts/services/$s.sh" stop >>"$OPENCSBS_WORK/logs/$s.log" 2>&1 || true
  done
}
trap stop_all EXIT

for s in $SERVICES; do
  echo "== starting $s ($(date -u +%H:%M:%S))"
  t0=$SECONDS
  if bash "scripts/services/$s.sh" start >>"$OPENCSBS_WORK/logs/$s.log" 2>&1; then
    STARTED+=("$s")
    echo "   $s up in $((SECONDS - t0)) s"
  else
    echo "!! $s did not start (see $OPENCSBS_WORK/logs/$s.log)"; tail -20 "$OPENCSBS_WORK/logs/$s.log" || true
    if [ -n "${CI:-}" ]; then exit 1; fi
  fi
done
for f in "$OPENCSBS_WORK"/env/*.env; do
  [ -e "$f" ] && . "$f"
done

DBS=${OPENCSBS_TEST_DBS:-"sqlite postgresql"}
rc=0
# the first database runs every test; the next ones only the tests that use the database (the others would repeat
# themselves: tests/conftest.py deselects them under OPENCSBS_TEST_DATABASE_ONLY=1, see docs/development.md)
only=0
for db in $DBS; do
  echo "== pytest on $db$( [ $only = 1 ] && echo " (tests using the database only)" ) ($(date -u +%H:%M:%S))"
  t0=$SECONDS
  # exit 5 = nothing collected: on a later pass, the selected tests may all be database-independent
  OPENCSBS_TEST_DB=$db OPENCSBS_TEST_DATABASE_ONLY=$only .venv/bin/python -m pytest "$@" \
    || { r=$?; if [ $only = 0 ] || [ $r != 5 ]; then rc=$r; fi; }
  echo "   pytest on $db: $((SECONDS - t0)) s"
  only=1
done
exit $rc
