#!/usr/bin/env bash
# Builds the node image with no Docker daemon and no registry, then runs the node in it.
#
#   1. buildah and mmdebstrap, from apt if missing;
#   2. wheelhouse/ in the build context: every wheel the image installs, as pip's own
#      configuration finds them here (torch==2.13.0 included: a CPU wheel where pip is
#      pointed at one), so the build itself needs no index; removed at the end (unless it
#      was there before), so a later `docker build` does not install from it;
#   3. the base image: Debian bookworm from Debian's packages (mmdebstrap) with the
#      Dockerfile's DEBIAN_PACKAGES, imported into buildah (kept for the next run);
#   4. the image, from the Dockerfile on that base (buildah, vfs storage, chroot isolation);
#   5. inside it: `asi-node --version`, the GPU stack's versions, a one-candidate campaign
#      in the sandbox's jail, `daemon` answering the image's own HEALTHCHECK, `audit`
#      of the exported log, and the daemon's TEE start-up on a fake configfs-tsm
#      (scripts/tee_startup_check.py).
#
# Storage, the base tarball and the logs live in $ASI_NODE_IMAGE_WORK (default
# /var/tmp/asi-node-image), outside the repository; --fresh empties it first. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${ASI_NODE_IMAGE_WORK:-/var/tmp/asi-node-image}
image=${ASI_NODE_IMAGE:-localhost/asi-node:ci}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
extras=$(sed -n 's/^ARG EXTRAS=//p' Dockerfile)
packages=$(sed -n 's/^ARG DEBIAN_PACKAGES="\(.*\)"$/\1/p' Dockerfile)
# Named by its package list, so a changed list makes a new base.
base=localhost/asi-node-base:bookworm-$(echo "$packages" | sha256sum | cut -c1-12)

if [ "${1:-}" = "--fresh" ]; then
    rm -rf "$work"
fi
mkdir -p "$work"
started=$(date +%s)
step() { echo "build_image: $1 ($(($(date +%s) - started)) s)"; }

step "tools"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
bah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
container=""
made_wheelhouse=""
[ -d wheelhouse ] || made_wheelhouse=yes
cleanup() {
    [ -z "$container" ] || "${bah[@]}" rm "$container" >/dev/null 2>&1 || true
    [ -z "$made_wheelhouse" ] || rm -rf wheelhouse
}
trap cleanup EXIT

step "wheelhouse"
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
mkdir -p wheelhouse
if ! nice -n 10 "$python" -m pip wheel --wheel-dir wheelhouse --find-links wheelhouse \
    "setuptools>=68" ".[${extras}]" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    exit 1
fi
rm -f wheelhouse/asi_node-*.whl
ls wheelhouse/torch-*.whl >/dev/null  # the train extra's torch must be there

if ! "${bah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    step "base image (mmdebstrap)"
    # Debian's merged /usr without the usrmerge package (and the perl it pulls); no
    # manuals, translations or docs but the copyright files.
    # shellcheck disable=SC2086  # the package list is words
    if ! nice -n 10 mmdebstrap --variant=minbase --mode=root \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --include="$(echo $packages | tr ' ' ',')" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm "$work/base.tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security_mirror bookworm-security main" >"$work/mmdebstrap.log" 2>&1; then
        cat "$work/mmdebstrap.log" >&2
        exit 1
    fi
    importer=$("${bah[@]}" from scratch)
    "${bah[@]}" add --quiet "$importer" "$work/base.tar" /
    "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash "$importer"
    "${bah[@]}" commit --quiet --rm "$importer" "$base" >/dev/null
    rm -f "$work/base.tar"
fi

step "image"
# --format docker keeps the HEALTHCHECK (OCI image configs have none). Without --layers
# buildah commits one layer per stage: vfs storage copies every layer whole.
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
nice -n 10 "${bah[@]}" bud --quiet --isolation chroot --format docker \
    --build-arg BASE_IMAGE="$base" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || true)" \
    --build-arg SOURCE_URL="$(git remote get-url origin 2>/dev/null || true)" \
    --tag "$image" . >/dev/null
built=$(($(date +%s) - started))
"${bah[@]}" rmi --prune >/dev/null 2>&1 || true

step "checks in the image"
container=$("${bah[@]}" from --quiet "$image")
# The image's HEALTHCHECK, as Docker would run it; the daemon listens on a free port of
# the host's network, which chroot isolation shares.
health_code=$("${bah[@]}" inspect --type image "$image" | "$python" -c 'import json, sys
test = json.load(sys.stdin)["Docker"]["config"]["Healthcheck"]["Test"]
assert test[:3] == ["CMD", "python", "-c"], test
print(test[3])')
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# CAP_SYS_ADMIN as `docker run --cap-add SYS_ADMIN` gives it: the sandbox's namespaces.
run=("${bah[@]}" run --isolation chroot --cap-add CAP_SYS_ADMIN
    --env ASI_NODE_API__PORT="$port" --env HEALTH_CODE="$health_code" "$container" --)

"${run[@]}" asi-node --version
"${run[@]}" python -c 'from importlib.metadata import version as v
print(", ".join(f"{p} {v(p)}" for p in ("torch", "triton", "fla-core", "einops", "nv-attestation-sdk", "psycopg")))'
# The audit's C extension was built (setup.py skips it silently where it cannot be).
"${run[@]}" python -c 'from attestation import keys
assert keys._ed25519 is not None, "attestation._ed25519 was not built"
print("attestation._ed25519: built")'
"${run[@]}" sh -c 'gcc --version | head -1 && tini --version
du -sh /opt/venv/lib/python3.11/site-packages/* | sort -h | tail -4'
# What the sandbox probes before it jails a candidate.
"${run[@]}" sh -c 'unshare --fork --pid --mount-proc --net --mount --ipc --uts --kill-child true \
    && echo "sandbox: namespaces available" || echo "sandbox: no namespaces"'
# One candidate against one baseline, 20 steps each, no re-runs.
"${run[@]}" sh -ec '
cat > /tmp/smoke.toml <<EOF
preset = "quick"
train_steps = 20
baselines = ["linear"]
reference = "linear"
rerun_seeds = []

[budget]
max_candidates = 1
max_rerun_candidates = 0
EOF
asi-node campaign create smoke --config /tmp/smoke.toml
asi-node campaign run smoke
asi-node experiments list smoke
test "$(asi-node experiments list smoke --status done | wc -l)" -eq 2'
"${run[@]}" sh -ec '
asi-node daemon >/tmp/daemon.log 2>&1 &
pid=$!
healthy=""
for _ in $(seq 120); do
    if python -c "$HEALTH_CODE" 2>/dev/null; then healthy=yes; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
done
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || true
cat /tmp/daemon.log
test -n "$healthy" && echo "daemon: /health answered ok"'
"${run[@]}" sh -ec 'asi-node log export /tmp/log.bundle && asi-node audit /tmp/log.bundle'
# TEE start-up on the tests' fake configfs-tsm: evidence logged before the daemon serves
# and bound to its key; with the provider set and no TEE, a refusal naming what is missing.
"${bah[@]}" copy "$container" scripts/tee_startup_check.py tests/attestation/tee/fake_tee.py /tmp/
"${run[@]}" python /tmp/tee_startup_check.py --fake-tee /tmp

step "done: $image built in ${built} s, $("${bah[@]}" images --format '{{.Size}}' "$image"); storage $(du -sh "$work" | cut -f1)"
