#!/usr/bin/env bash
# Installs asi-node with its test tools and runs the test suite. The default run is fast;
# under CI (CI=true) the slow suites run after it, then the container image is built and
# run without a Docker daemon (scripts/build_image.sh: about 16 minutes from scratch on
# 2 busy cores, less with its base image kept from an earlier run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
bash scripts/services.sh
.venv/bin/python -m pytest -q
if [ "${CI:-}" = "true" ]; then
    .venv/bin/python -m pytest -q -m slow
    bash scripts/build_image.sh
fi
