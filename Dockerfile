# Mira service image. Build: docker build -t mira:0.1.0 .   (or `make image`)
# Run:   docker run --rm -p 5000:5000 mira:0.1.0   (see docker-compose.yml and deploy/)
#
# BASE_IMAGE: any Debian-based image with python >= 3.11 (as `python`) and useradd. The default
# is the official slim image; where no registry is reachable, `make base-image` builds a local
# one and `make image BASE_IMAGE=mira-base:bookworm` uses it. Both stages use the same base.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# --- build stage: dependencies and the package go into a venv copied into the runtime image ---
FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build tools in their own venv; the runtime venv gets neither pip nor setuptools.
WORKDIR /src
COPY deploy/docker/build-requirements.txt ./
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install --no-cache-dir --require-hashes -r build-requirements.txt \
    && python -m venv --without-pip /opt/venv

# Dependency layer: the hash-checked lock (`make lock`), rebuilt only when requirements.txt
# changes. Everything after it works offline.
COPY requirements.txt ./
RUN /opt/tools/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-deps \
    --require-hashes -r requirements.txt

# The package itself, without touching the dependency layer and without network.
COPY pyproject.toml README* ./
COPY src ./src
RUN /opt/tools/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --no-index \
    --wheel-dir /tmp/wheels . \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-deps \
    --no-index /tmp/wheels/mira-*.whl \
    && /opt/venv/bin/python -c "import mira"

# --- runtime stage ---
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PATH=/opt/venv/bin:$PATH

# Fixed numeric ids so Kubernetes' runAsNonRoot can verify the user (it cannot resolve names).
RUN groupadd --system --gid 10001 mira \
    && useradd --system --uid 10001 --gid mira --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mira \
    && install -d -o mira -g mira -m 0750 /var/log/mira

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# A working default configuration (logs to stdout); mount your own over it or pass another path.
COPY deploy/docker/config.json /app/config.json

USER 10001:10001
EXPOSE 5000
# Mira owns SIGTERM: it turns unready, drains for shutdown.drain_delay, finishes in-flight
# requests and exits. It runs as PID 1 without a shell (exec-form CMD) so the signal reaches it.
STOPSIGNAL SIGTERM
# Probes /health at the host and port the config file names (a wildcard host is probed on
# loopback), so a config that moves server.port or binds 127.0.0.1 still reports healthy.
# Without an argument it reads the config path from the running Mira command line, so a
# `docker run IMAGE python -m mira.entrypoints.web /etc/mira/config.json` needs no override.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["mira", "healthcheck"]

CMD ["python", "-m", "mira.entrypoints.web", "/app/config.json"]
