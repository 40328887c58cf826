#!/usr/bin/env bash
# Creates .venv and installs asi-node into it. torch goes first and pinned: a looser
# requirement would pull a multi-GB CUDA build. With --dev, the test tools come too, and
# lm-evaluation-harness, the oracle of the benchmark-agreement test (about 35 s more),
# and Ray for the scale-out test.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="train,postgres"
[ "${1:-}" = "--dev" ] && extras="train,postgres,dev,lmeval,ray"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
# The contract toolchains from npm, pinned by their package-lock.json files: solc-js,
# OpenZeppelin, forge and anvil (contracts/), and moc for the ICP canister (contracts/icp/).
if command -v npm >/dev/null 2>&1; then
    (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
    (cd contracts/icp && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "npm not found: skipping the contract toolchains (their tests will skip)" >&2
fi
# The dashboard's browser tests drive Debian's headless Chromium through its chromedriver.
if [ "${1:-}" = "--dev" ] && [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver >/dev/null
    else
        echo "chromium-driver missing and not root: run 'sudo apt-get install chromium" \
            "chromium-driver', or the browser tests (tests/node/test_dashboard_browser.py)" \
            "fail in CI and skip elsewhere" >&2
    fi
fi
echo "asi-node installed in .venv (extras: ${extras})"
