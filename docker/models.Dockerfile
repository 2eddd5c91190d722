# Builds lynx's models once (torch lives only here) and the default retrieval index; the service
# images copy what they need from this one. Build context: the repository root.
# PYTHON_IMAGE may be any Debian bookworm image with python3 and its venv module; the default is the
# pinned upstream image. Builds behind a TLS-inspecting proxy pass its CA bundle as the secret
# "ca-certificates": it is mounted for the install steps only and never lands in a layer.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/lynx/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-doc=3.11.2-6+deb12u* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/serve.lock ./requirements/serve.lock
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv /opt/lynx && pip install --requirement requirements/serve.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    mkdir -p /models \
 && pip install --no-deps . \
 && lynx models build --precision int4 \
 && LYNX_RETRIEVER_INDEX_DIR=/models/index lynx ingest /usr/share/doc/python3.11/html/tutorial \
 && mv /root/.cache/lynx/models/int4/decoder /models/decoder \
 && mv /root/.cache/lynx/models/int4/embedder /models/embedder \
 && rm -rf /root/.cache
