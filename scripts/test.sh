#!/usr/bin/env bash
# Installs asi-node with its test tools and runs the test suite. The default run is fast;
# under CI (CI=true) the slow suites run after it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
bash scripts/services.sh
.venv/bin/python -m pytest -q
if [ "${CI:-}" = "true" ]; then
    .venv/bin/python -m pytest -q -m slow
fi
