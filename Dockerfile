# syntax=docker/dockerfile:1
# One image for every canal process; the Deployment picks the process:
#   canal serve ingest|compactor|query|gateway|worker, canal migrate, canal drift
# Build:  docker build -t canal:dev .

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: dependencies, the package, generated gRPC stubs ----------------
# Stub generation is `make protos`: site-packages is on the include path for
# google/rpc/*.proto (shipped by googleapis-common-protos).
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && pip install --upgrade pip

WORKDIR /src

# Dependencies first, from pyproject.toml and the lockfile alone, so code edits reuse
# this layer. Only the runtime dependencies (no test/lint/bench extra), at the exact
# versions of requirements.lock (refresh it with `make lock`).
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c requirements.lock -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && rm -rf gen && mkdir -p gen \
    && python -m grpc_tools.protoc -I protos \
        -I "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
        --python_out=gen --pyi_out=gen --grpc_python_out=gen $(find protos -name '*.proto') \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q /src > /dev/null

# ---- runtime: no compilers, no pip cache, non-root ---------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG UID=10001
ARG GID=10001
RUN groupadd --system --gid ${GID} canal \
    && useradd --system --uid ${UID} --gid ${GID} --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin canal

# The source tree is on PYTHONPATH ahead of site-packages: files the wheel does
# not carry (alembic.ini and migrations, dashboard assets) resolve next to the
# code that opens them. gen/ holds the protoc output (protos/ path = package path).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/gen:/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    HOST=0.0.0.0 \
    PORT=8080

COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /src /app

WORKDIR /app
USER ${UID}:${GID}

# gRPC: ingest 50051, compactor 50052, query 50053; gateway HTTP 8080;
# Prometheus: 9101-9104.
EXPOSE 50051 50052 50053 8080 9101 9102 9103 9104

ENTRYPOINT ["canal"]
CMD ["--help"]
