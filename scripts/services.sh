#!/usr/bin/env bash
# Starts the loopback services the integration tests use, if they are installed and down.
# Tests that need a service it could not start skip with the reason.
set -u
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    done
fi
exit 0
