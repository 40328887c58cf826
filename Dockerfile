# The node container: the daemon with the training stack, the GPU fast paths (fla, Triton
# and the C compiler Triton builds its launchers with) and NVIDIA GPU attestation.
#
# Build: docker build -t asi-node .
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu   a CPU-only node
#   --build-arg BASE_IMAGE=...   any Debian bookworm image; what it lacks of
#                                DEBIAN_PACKAGES is installed with apt
#   A wheelhouse/ folder in the context is installed from with no index at all
#   (scripts/build_image.sh fills one for its own build, with no Docker daemon).
# Node: docker run -d --gpus all --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
#           -p 127.0.0.1:8787:8787 -v asi-node-home:/data asi-node
# SYS_ADMIN lets the sandbox build each candidate's jail: its own PID, mount and network
# namespaces and a root holding only Python, the code, the workspace, the shard and the
# compile cache (it runs as root for that and drops each candidate to nobody); Docker's
# AppArmor profile denies the mounts the jail makes, hence apparmor=unconfined. Without
# them the node refuses to run candidates and names what is missing, unless
# `[sandbox] allow_unisolated = true` (rlimits only, the container visible). So does
# `--user asi-node`, which runs the node unprivileged.
# The first start creates the node home on the volume. compose.yaml adds PostgreSQL and
# Prometheus.
ARG BASE_IMAGE=debian:bookworm-slim

# The wheelhouse, mounted into the install steps only, so no wheel stays in a layer.
# LICENSE is copied beside it so that the COPY matches something when there is none.
FROM scratch AS wheelhouse
COPY LICENSE wheelhouse* /

FROM ${BASE_IMAGE}
# tini is PID 1: it forwards `docker stop`'s SIGTERM to the daemon and reaps orphans.
ARG DEBIAN_PACKAGES="python3.11 python3.11-venv python3.11-dev gcc libc6-dev tini procps passwd ca-certificates"
RUN set -eu; \
    missing=""; \
    for p in ${DEBIAN_PACKAGES}; do \
        dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin asi-node; \
    install -d -o asi-node -g asi-node -m 0755 /data; \
    python3.11 -m venv /opt/venv

# torch in a layer of its own, before the source: a code change does not reinstall it.
# The default index (PyPI) gives the CUDA build; keep the version the train extra pins.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then from="--no-index --find-links /wheelhouse"; \
    else from="--index-url ${TORCH_INDEX_URL}"; fi; \
    /opt/venv/bin/pip install --no-cache-dir $from "torch==${TORCH_VERSION}"

ARG EXTRAS=train,postgres,gpu,nvidia
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=bind,target=/context \
    set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then from="--no-index --find-links /wheelhouse"; \
    else from=""; fi; \
    mkdir /tmp/src; \
    tar -C /context --exclude=./wheelhouse -cf - . | tar -C /tmp/src -xf -; \
    /opt/venv/bin/pip install --no-cache-dir $from "/tmp/src[${EXTRAS}]"; \
    rm -rf /tmp/src; \
    install -D -m 0644 /context/LICENSE /usr/share/doc/asi-node/LICENSE

ARG VERSION=0.1.0
ARG SOURCE_URL=""
ARG REVISION=""
LABEL org.opencontainers.image.title="asi-node" \
      org.opencontainers.image.description="A node daemon for autonomous, verifiable linear-attention architecture research" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}"

ENV PATH=/opt/venv/bin:$PATH \
    ASI_NODE_HOME=/data \
    ASI_NODE_API__HOST=0.0.0.0 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONUNBUFFERED=1
ARG NODE_USER=root
USER ${NODE_USER}
VOLUME ["/data"]
EXPOSE 8787
# `daemon`'s /health says "degraded" while governance is stale or the node revoked.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import json, os, urllib.request as r; port = os.environ.get('ASI_NODE_API__PORT', '8787'); body = json.load(r.urlopen(f'http://127.0.0.1:{port}/health', timeout=8)); raise SystemExit(body.get('status') != 'ok')"]
ENTRYPOINT ["tini", "--", "asi-node"]
CMD ["daemon"]
