# syntax=docker/dockerfile:1
#
# auditstream container image.
#
#   docker build -t auditstream:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Stage 1 builds wheels (auditstream and every dependency); stage 2 installs them with no
# index, so the runtime image has no build tools and no wheel files. The runtime runs as a
# numeric non-root user and works with a read-only root filesystem: it writes only to the
# checkpoint volume (/var/lib/auditstream) and /tmp. See docs/deployment.md.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md and the auditstream package.
# The [aws] extra (aiobotocore), the [azure] extra (azure-identity, azure-monitor-ingestion) and
# the [lake] extra (pyarrow) are built in too: the image has every sink, s3, cloudwatch_logs,
# security_lake and azure_monitor included.
COPY . .
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[aws,azure,lake]"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="auditstream" \
      org.opencontainers.image.description="Streams StrongDM audit data (activities, queries, history) into a SIEM" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# Nothing may write to the (read-only) root filesystem at run time: no .pyc files (they are
# compiled at install time instead), unbuffered logs, temp files in /tmp (a tmpfs or volume).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp \
    AUDITSTREAM_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz

RUN groupadd --system --gid 10001 auditstream \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/auditstream --shell /usr/sbin/nologin auditstream \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/auditstream \
 && install -d -o root -g root -m 0755 /etc/auditstream

# aiobotocore's wheel is the [aws] extra, azure-identity's and azure-monitor-ingestion's the
# [azure] extra, pyarrow's the [lake] extra (the build stage resolved their version ranges).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --compile --no-index --find-links=/wheels \
      /wheels/auditstream-*.whl /wheels/aiobotocore-*.whl \
      /wheels/azure_identity-*.whl /wheels/azure_monitor_ingestion-*.whl /wheels/pyarrow-*.whl \
 && auditstream --help >/dev/null \
 && python -c "import aiobotocore.session, azure.identity.aio, azure.monitor.ingestion.aio, pyarrow.parquet"

# Checkpoints (must persist: mount a named volume or a host directory owned by 10001) and
# temporary files. The config goes to /etc/auditstream/config.toml (read-only bind mount),
# secrets to /run/secrets/auditstream (read via the *_file config keys).
VOLUME ["/var/lib/auditstream", "/tmp"]
WORKDIR /var/lib/auditstream
EXPOSE 9464
USER 10001:10001

# /healthz answers while the event loop is alive (no curl in a slim image: Python does it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['AUDITSTREAM_HEALTHCHECK_URL'], timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["auditstream"]
CMD ["run", "--config", "/etc/auditstream/config.toml"]
