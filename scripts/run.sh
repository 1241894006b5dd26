#!/usr/bin/env bash
# THE run command (README): server + worker on the embedded default, with a tiny local model.
#   SQLite under var/, objects under var/objects, Celery over a filesystem broker (or Redis when
#   REDIS_URL is reachable), CPU training. Ctrl-C stops both processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PORT=${PORT:-8000}
export LONGTUNE_VAR_DIR=${LONGTUNE_VAR_DIR:-$PWD/var}

python3 manage.py migrate --noinput
python3 manage.py bootstrap_demo   # tiny local base model in the registry (built once) + admin hint

# A fixed mmap threshold keeps freed activation buffers from fragmenting glibc's heap: it halved
# the training step's peak RSS in benchmarks/train_memory.py.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-131072}
# Scrubbing (cpu) and training (gpu) get a worker each: an upload is never queued behind a
# fine-tune that holds its worker for minutes (or hours). The cpu worker also runs celery beat
# (-B): the watchdogs and the lost-message sweep of compute/schedule.py. It is a prefork pool
# of LONGTUNE_CPU_WORKER_SLOTS processes: one org scrubs at most SCRUB_MAX_CONCURRENT_PER_ORG
# files at once (datasets/fairness.py), so another org's upload takes a free slot instead of
# waiting behind a huge file, and the pool enforces the hard time limits (compute/time_limits.py).
# Every worker runs under `supervise` (scripts/supervise.sh): a worker process that exits is
# started again. The solo workers end their own process when a task runs past its hard time
# limit (workers/time_limits.py), after failing its work; a crash is handled the same way.
source scripts/supervise.sh
supervise cpu python3 -m celery -A workers.celery_app worker -Q cpu -P prefork -c "${LONGTUNE_CPU_WORKER_SLOTS:-2}" \
  -l INFO -n cpu@%h \
  -B -s "$LONGTUNE_VAR_DIR/celerybeat-schedule" --without-gossip --without-mingle &
CPU_WORKER=$!
supervise gpu python3 -m celery -A workers.celery_app worker -Q gpu -P solo -c 1 -l INFO -n gpu@%h \
  --without-gossip --without-mingle &
WORKER=$!
# Serving holds a worker slot while it runs. Shared endpoints (the default) of the tiny base and
# of its LoRA fine-tunes all ride ONE shared server process, so one slot serves them all.
supervise serve python3 -m celery -A workers.celery_app worker -Q inference -P solo -c 1 -l INFO -n serve@%h \
  --without-gossip --without-mingle &
SERVE_WORKER=$!
# Dedicated instances (README): the supervisor starts/restarts/drains their worker processes.
python3 manage.py provisioning_supervise &
SUPERVISOR=$!
trap 'kill $CPU_WORKER $WORKER $SERVE_WORKER $SUPERVISOR 2>/dev/null; wait $CPU_WORKER $WORKER $SERVE_WORKER $SUPERVISOR 2>/dev/null' EXIT INT TERM

echo
echo "LongTune is up:  http://127.0.0.1:$PORT/  (API docs: http://127.0.0.1:$PORT/v1/docs)"
echo "Sign up in a browser at http://127.0.0.1:$PORT/ , or from the shell:"
echo "  curl -s -X POST localhost:$PORT/v1/auth/signup -H 'Content-Type: application/json' \\"
echo "       -d '{\"email\":\"you@example.com\",\"password\":\"a-long-password\",\"organization_name\":\"Acme\"}'"
echo
python3 -m uvicorn longtune.asgi:application --app-dir platform --host 127.0.0.1 --port "$PORT"
