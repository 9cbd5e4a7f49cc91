# syntax=docker/dockerfile:1
# dispatcher: webhook delivery daemon.
#
#   docker build -t dispatcher .
#   docker run -p 8080:8080 -v dispatcher-data:/var/lib/dispatcher dispatcher
#
# Without DISPATCHER_DATABASE_URL the daemon runs an embedded PostgreSQL in the
# volume (data, and the master key file unless DISPATCHER_MASTER_KEY is set).
# With it, the volume only holds the master key file. Provider profiles are in
# /etc/dispatcher: -e DISPATCHER_CONFIG=/etc/dispatcher/okx.toml

ARG PYTHON_VERSION=3.12

# --- build: the dispatcher wheel and every dependency as wheels -----------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN pip wheel --wheel-dir /wheels ".[fast,telemetry]"

# --- runtime ----------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DISPATCHER_DATA_DIR=/var/lib/dispatcher \
    DISPATCHER_SERVER__HOST=0.0.0.0 \
    DISPATCHER_LOG__FORMAT=json

# A fixed non-root user. The embedded PostgreSQL refuses to run as root (as root it
# would create a user of its own); as this user it simply runs. /run/user/<uid> is
# where it keeps its inter-process lock file.
RUN groupadd --system --gid 10001 dispatcher \
 && useradd --system --uid 10001 --gid dispatcher --no-create-home \
        --home-dir /var/lib/dispatcher --shell /usr/sbin/nologin dispatcher \
 && install -d -m 0750 -o dispatcher -g dispatcher /var/lib/dispatcher \
 && install -d -m 0700 -o dispatcher -g dispatcher /run/user/10001

COPY --from=build /wheels /tmp/wheels
RUN pip install --no-index --find-links=/tmp/wheels "dispatcher[fast,telemetry]" \
 && rm -rf /tmp/wheels
COPY config /etc/dispatcher

USER dispatcher
WORKDIR /var/lib/dispatcher
# Declared after the chown above so that a new volume starts owned by the user.
VOLUME /var/lib/dispatcher
EXPOSE 8080

# Liveness only (/readyz would restart a healthy process when the database blips).
# slim has no curl: use Python. Follows DISPATCHER_SERVER__PORT if it is set.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DISPATCHER_SERVER__PORT', '8080'), timeout=2)"]

# SIGTERM (docker stop) drains in-flight work for server.grace_period_seconds (10 s by
# default) and stops the embedded PostgreSQL; give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
CMD ["dispatcher", "serve", "--host", "0.0.0.0"]
