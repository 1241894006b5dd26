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

python3 -m celery -A workers.celery_app worker -Q cpu,gpu,inference -P solo -c 1 -l INFO \
  --without-gossip --without-mingle &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM

echo
echo "LongTune is up:  http://127.0.0.1:$PORT/  (API docs: http://127.0.0.1:$PORT/v1/docs)"
echo "Sign up from the shell:"
echo "  curl -s -X POST localhost:$PORT/v1/auth/signup -H 'Content-Type: application/json' \\"
echo "       -d '{\"email\":\"you@example.com\",\"password\":\"a-long-password\",\"organization\":\"Acme\"}'"
echo
python3 -m uvicorn longtune.asgi:application --app-dir platform --host 127.0.0.1 --port "$PORT"
