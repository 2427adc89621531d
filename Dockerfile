# Mira service image. Build: docker build -t mira:0.1.0 .
# Run:   docker run --rm -p 5000:5000 mira:0.1.0   (see docker-compose.yml and deploy/)

# --- build stage: dependencies and the package go into a venv copied into the runtime image ---
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
WORKDIR /src

# Dependency layer: rebuilt only when pyproject.toml changes, not on every source edit.
# The requirement list (core + the "all" extra: hvac, kubernetes) is read from pyproject.toml.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['all']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

# The package itself, without touching the dependency layer. README* may be absent.
COPY pyproject.toml README* ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import mira"

# --- runtime stage ---
FROM python:3.11.13-slim-bookworm

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
# Slim images have no curl: probe /health with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2).status == 200 else 1)"]

CMD ["python", "-m", "mira.entrypoints.web", "/app/config.json"]
