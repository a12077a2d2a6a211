# One image for every Flashwire process; docker-compose.yml builds it once (service `worker`, tag
# flashwire:local) and picks each container's command.
#   service node:  flashwire serve --host 0.0.0.0   (the default below, port 8000)
#   worker:        flashwire worker
# Configure with REDIS_URL and the FLASHWIRE_* variables (see docs/configuration.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs (README.md is the package's long description).
COPY pyproject.toml README.md ./
COPY flashwire ./flashwire
COPY service ./service
COPY workers ./workers
COPY web ./web
RUN pip install .

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin flashwire
USER flashwire

EXPOSE 8000

# No HEALTHCHECK here: the worker runs from this image too and serves no HTTP.
# docker-compose.yml checks the service nodes' /healthz.
CMD ["flashwire", "serve", "--host", "0.0.0.0"]
