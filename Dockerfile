# The node container. Build: docker build -t asi-node .
# Run:   docker run --cap-add SYS_ADMIN -v asi-node-home:/data asi-node demo
# Node:  docker run --cap-add SYS_ADMIN -p 127.0.0.1:8787:8787 -v asi-node-home:/data \
#            -e ASI_NODE_API__HOST=0.0.0.0 asi-node daemon   (API and governed campaigns)
# SYS_ADMIN lets the sandbox create PID, mount and network namespaces for candidate code;
# without it the sandbox falls back to rlimits and an unprivileged user, and says so.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux procps \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/asi-node
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY node ./node
COPY loop ./loop
COPY kernels ./kernels
COPY governance ./governance
COPY attestation ./attestation
# torch is pinned and installed first (see scripts/install.sh); the container uses a CPU or
# CUDA wheel by the index it is built against.
RUN python -m pip install --no-cache-dir "torch==2.13.0" \
    && python -m pip install --no-cache-dir ".[train,postgres]"

ENV ASI_NODE_HOME=/data
VOLUME ["/data"]
EXPOSE 8787
ENTRYPOINT ["asi-node"]
CMD ["demo"]
