#!/usr/bin/env bash
# THE test command (README): installs what is missing, starts PostgreSQL + Redis + S3 (moto server),
# runs the whole suite against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --services
# shellcheck disable=SC1091
source scripts/services.sh start
trap 'bash scripts/services.sh stop' EXIT
python3 -m pytest "$@"
