# nnserve serving image: BentoML + onnxruntime over the shipped ONNX models. No torch, no training extras.
#
#   docker build -t nnserve:latest .
#   docker run --rm -p 127.0.0.1:3000:3000 nnserve:latest
#   docker run --rm -p 127.0.0.1:3000:3000 -v "$PWD/artifacts:/models:ro" -e NNSERVE_MODEL_DIR=/models nnserve:latest
#
# Configuration is by environment only: every NNSERVE_* setting of service/settings.py (NNSERVE_MODELS,
# NNSERVE_API_WORKERS, NNSERVE_REQUEST_TIMEOUT_S, ...), plus BENTOML_HOST / BENTOML_PORT for the listener.

# ---- build stage: a virtual environment with the serving dependencies ------------------------------------------
FROM python:3.11-slim AS build

# Optional package-index settings for a build that must go through a TLS-intercepting proxy or a private index
# (our CI). Both are empty by default, and an empty one is unset before pip runs, so a plain `docker build .` uses
# pip's own defaults. The CA bundle has to be in the build context; deploy/*.crt is the one place read for it:
#   cp /etc/ssl/certs/ca-certificates.crt deploy/ca.crt          # git-ignored, never committed
#   docker build --build-arg PIP_CERT=/build/ca.crt -t nnserve:latest .
# (add --build-arg PIP_INDEX_URL=... to use another index). Neither the file nor the values reach the final
# image: build args exist only in this stage, and only /opt/venv is copied out of it.
ARG PIP_CERT=
ARG PIP_INDEX_URL=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
# The CA pattern matches nothing in a normal checkout, and both builders must accept that: BuildKit takes an empty
# wildcard but fails on a missing folder (without a .crt, .dockerignore leaves deploy/ out of the context), hence
# the folder itself as a glob, deplo[y]; the classic builder (docker-compose 1.29's `build`) rejects a COPY whose
# sources all match nothing, hence pyproject.toml in the same COPY.
COPY pyproject.toml deplo[y]/*.crt ./
# Only [project].dependencies, read from pyproject.toml, so a code change does not redo this layer. The project
# itself is not installed: the service runs from its source tree in /app, as `make serve` does from the repo root.
RUN set -eu; \
    [ -n "${PIP_CERT:-}" ] || unset PIP_CERT; \
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL; \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt; \
    python -m venv /opt/venv; \
    /opt/venv/bin/pip install -r requirements.txt; \
    /opt/venv/bin/python -c 'import importlib.util, sys; sys.exit("torch in the serving image" if importlib.util.find_spec("torch") else 0)'

# ---- runtime image ------------------------------------------------------------------------------------------------
FROM python:3.11-slim

# BENTOML_HOME holds BentoML's prometheus multiprocess files, so it must be writable by the service user.
# NNSERVE_MODEL_DIR points at the baked-in models; mount another folder and set it to serve those instead.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BENTOML_DO_NOT_TRACK=True \
    BENTOML_HOME=/home/nnserve/bentoml \
    BENTOML_HOST=0.0.0.0 \
    BENTOML_PORT=3000 \
    NNSERVE_MODEL_DIR=/app/artifacts

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/nnserve --shell /usr/sbin/nologin nnserve

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Only what the service imports (service/ and the torch-free contract/) and the models;
# .dockerignore keeps everything else out of the build context. Files stay root-owned: the service only reads them.
COPY service/ service/
COPY contract/ contract/
COPY artifacts/ artifacts/

USER nnserve
EXPOSE 3000 8001

# /readyz answers 200 only once every model service has loaded and warmed up. The slim image has no curl, so the
# probe is Python's urllib: urlopen raises (exit 1) on a refused connection and on any non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('BENTOML_PORT', '3000'), timeout=4)"]

# Host and port come from BENTOML_HOST / BENTOML_PORT (bentoml serve's --host/--port read them).
CMD ["bentoml", "serve", "service.service:NNServe"]
