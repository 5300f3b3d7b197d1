# imageops operator image: one image for both roles (`imageops run --role agent|controller`).
#
#   docker build -t imageops:dev .
#   docker build --build-arg DOCKER_GID=$(stat -c %g /var/run/docker.sock) -t imageops:dev .
#
# BASE_IMAGE: any image with Python 3.11 at /usr/local/bin/python3 and a POSIX sh.
# The test bed builds from a locally made base (no public registry is reachable
# there; see tests/e2e/test_image.py). Works with the legacy builder and BuildKit.
ARG BASE_IMAGE=python:3.11-slim

# ---- builder: wheels of imageops and of every dependency --------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, from the metadata and an empty package: this layer is reused
# until pyproject.toml changes. The stub's build output is removed, so that nothing of it
# can end up in the real wheel below.
COPY pyproject.toml README.md ./
RUN mkdir -p operator/imageops && touch operator/imageops/__init__.py \
 && python3 -m pip wheel --wheel-dir /wheels/deps . \
 && rm -rf build operator /wheels/deps/imageops-*.whl
COPY operator ./operator
RUN python3 -m pip wheel --no-deps --wheel-dir /wheels/app .

# ---- install: a venv holding only the wheels, without pip -------------------
FROM ${BASE_IMAGE} AS install
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# --no-index: the runtime gets exactly the wheels built above, nothing fetched later.
# Dependencies in their own layers, reused while pyproject.toml is unchanged.
COPY --from=builder /wheels/deps /wheels/deps
RUN python3 -m venv /opt/imageops \
 && /opt/imageops/bin/python -m pip install --no-index /wheels/deps/*.whl
COPY --from=builder /wheels/app /wheels/app
# pip and setuptools then leave the venv: nothing installs packages at run time.
# kubernetes/aio (an asyncio copy of the whole client, ~70 MB with bytecode) goes too:
# imageops uses the blocking client and kopf its own aiohttp client; `imageops --version`
# imports every module the operator runs (cli -> runtime -> adapters), so a missing
# piece fails the build here.
RUN /opt/imageops/bin/python -m pip install --no-index --no-deps /wheels/app/*.whl \
 && /opt/imageops/bin/python -m pip check \
 && /opt/imageops/bin/python -m pip uninstall --yes pip setuptools \
 && rm -rf /opt/imageops/lib/python3.11/site-packages/kubernetes/aio \
 && /opt/imageops/bin/imageops --version

# ---- final: base + venv, non-root -------------------------------------------
FROM ${BASE_IMAGE}
# Group id of the node's Docker socket. Optional at build time: the chart also adds
# it at run time (securityContext.supplementalGroups = agent.dockerGid).
ARG DOCKER_GID=
ARG UID=10001
# Written by hand (no useradd): minimal bases have no shadow tools. A socket gid that
# an existing group already has gets the user as a member instead of a duplicate.
RUN set -eu; \
    echo "imageops:x:${UID}:${UID}:imageops:/home/imageops:/sbin/nologin" >> /etc/passwd; \
    echo "imageops:x:${UID}:" >> /etc/group; \
    if [ -n "${DOCKER_GID}" ]; then \
      if awk -F: -v g="${DOCKER_GID}" '$3 == g { found = 1 } END { exit !found }' /etc/group; then \
        awk -F: -v g="${DOCKER_GID}" -v u=imageops 'BEGIN { OFS = ":" } \
          $3 == g { $4 = ($4 == "" ? u : $4 "," u) } { print }' /etc/group > /tmp/group; \
        cat /tmp/group > /etc/group; rm -f /tmp/group; \
      else \
        echo "docker-host:x:${DOCKER_GID}:imageops" >> /etc/group; \
      fi; \
    fi; \
    mkdir -p /home/imageops; chown "${UID}:${UID}" /home/imageops
COPY --from=install /opt/imageops /opt/imageops
ENV PATH=/opt/imageops/bin:$PATH \
    HOME=/home/imageops \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd;
# without ":group", so that the runtime adds the supplementary groups of /etc/group
# (the Docker socket's) - an explicit group would drop them.
USER ${UID}
# /metrics and /healthz (imageops run --metrics-port).
EXPOSE 8080
ENTRYPOINT ["imageops"]
CMD ["run"]
LABEL org.opencontainers.image.title="imageops" \
      org.opencontainers.image.description="Kubernetes operator for image pull, push and tag through each node's Docker socket" \
      org.opencontainers.image.licenses="Apache-2.0"
