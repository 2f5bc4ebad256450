#!/usr/bin/env bash
# PostgreSQL for the test suite: uses the server on 127.0.0.1:5432 if it answers, else installs and starts one.
set -euo pipefail
case "${1:-start}" in
  start)
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
      if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -q && apt-get -o DPkg::Lock::Timeout=600 install -y -q postgresql
      fi
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
      for i in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    fi
    pg_isready -h 127.0.0.1 -p 5432
    ;;
  stop) ;;  # a server we did not start is left running
esac
