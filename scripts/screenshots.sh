#!/usr/bin/env bash
# Writes PNGs of the dashboard's main views (1280x800) to docs/screenshots/ for the README:
# a fresh node runs the demo's campaign (pass --candidates N --train-steps S for a shorter
# one), serves its API on loopback, and headless Chromium saves each view. Needs
# `scripts/install.sh --dev` (selenium, Debian's chromium and chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/screenshots.py --out docs/screenshots "$@"
