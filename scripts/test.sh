#!/usr/bin/env bash
# THE test command (README): installs what is missing, starts PostgreSQL + Redis + S3 (moto server),
# runs the whole suite against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --services
# shellcheck disable=SC1091
source scripts/services.sh start
trap 'bash scripts/services.sh stop' EXIT
if [ $# -gt 0 ]; then
  python3 -m pytest "$@"
  exit
fi
# Memory-measuring tests first, in a pytest process of their own: after the whole suite has run
# in one process, the train-memory smoke test's child measured ~4x more for LongTune (seen in CI
# runs, not explained yet; alone it measures the same as the benchmark).
python3 -m pytest -q -m memory
python3 -m pytest -m "not memory"
