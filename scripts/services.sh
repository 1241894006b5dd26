#!/usr/bin/env bash
# Starts the real services the tests use, on private ports, with state under var/services/:
# PostgreSQL (54329), Redis (63790), moto's S3 HTTP server (53900).
#   source scripts/services.sh start   -> exports DATABASE_URL, REDIS_URL, S3_ENDPOINT_URL, S3_BUCKET, AWS_*
#   scripts/services.sh stop
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SVC="$ROOT/var/services"
PG_PORT=${LONGTUNE_PG_PORT:-54329}
REDIS_PORT=${LONGTUNE_REDIS_PORT:-63790}
S3_PORT=${LONGTUNE_S3_PORT:-53900}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
PG_DATA="$SVC/pg"  # owned by the postgres OS user when we are root

# Each daemon gets /dev/null as stdin: started with stdin CLOSED (a CI runner with no stdin),
# redis-server's first pipe() takes fd 0 and it crashes at start ("Error registering the
# readable event for the module pipe"), and every test that needs Redis then errors.
await_ready() {  # name, log file, command that succeeds once the service answers
  local name=$1 log=$2
  shift 2
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "services: $name did not come up; the end of $log:" >&2
  tail -n 20 "$log" >&2 2>/dev/null || true
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

start_postgres() {
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PG_DATA" && chmod 700 "$PG_DATA"
    as_pg "'$PG_BIN/initdb' -D '$PG_DATA' -U postgres --auth=trust -E UTF8 >/dev/null"
  fi
  if ! as_pg "'$PG_BIN/pg_ctl' -D '$PG_DATA' status" >/dev/null 2>&1; then
    as_pg "'$PG_BIN/pg_ctl' -D '$PG_DATA' -l '$PG_DATA/server.log' -w -o \"-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off\" start" >/dev/null </dev/null
  fi
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='longtune'" | grep -q 1 \
    || psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE longtune" >/dev/null
}

start_redis() {
  mkdir -p "$SVC/redis"
  if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$SVC/redis" --save '' --appendonly no \
      --daemonize yes --logfile "$SVC/redis/redis.log" --pidfile "$SVC/redis/redis.pid" </dev/null
    await_ready redis "$SVC/redis/redis.log" redis-cli -p "$REDIS_PORT" ping
  fi
}

start_s3() {
  mkdir -p "$SVC/s3"
  if ! curl -fsS "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1; then
    nohup python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$SVC/s3/moto.log" 2>&1 </dev/null &
    echo $! >"$SVC/s3/moto.pid"
    await_ready s3 "$SVC/s3/moto.log" curl -fsS "http://127.0.0.1:$S3_PORT/"
  fi
}

stop_all() {
  [ -n "$PG_BIN" ] && [ -d "$PG_DATA" ] && as_pg "'$PG_BIN/pg_ctl' -D '$PG_DATA' -m fast stop" >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ -f "$SVC/s3/moto.pid" ] && kill "$(cat "$SVC/s3/moto.pid")" 2>/dev/null || true
  rm -f "$SVC/s3/moto.pid"
}

case "${1:-start}" in
  start)
    start_postgres
    start_redis
    start_s3
    export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/longtune"
    export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    export S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
    export S3_BUCKET="${S3_BUCKET:-longtune-test}"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
    echo "services: postgres :$PG_PORT, redis :$REDIS_PORT, s3 :$S3_PORT"
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
