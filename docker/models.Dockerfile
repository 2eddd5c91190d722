# syntax=docker/dockerfile:1.7
# Builds lynx's models once (torch lives only here) and the default retrieval index; the service
# images copy what they need from this one. Build context: the repository root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-doc=3.11.2-6+deb12u* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/serve.lock ./requirements/serve.lock
RUN pip install --no-cache-dir --requirement requirements/serve.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN mkdir -p /models \
 && pip install --no-cache-dir --no-deps . \
 && lynx models build --precision int4 \
 && LYNX_RETRIEVER_INDEX_DIR=/models/index lynx ingest /usr/share/doc/python3.11/html/tutorial \
 && mv /root/.cache/lynx/models/int4/decoder /models/decoder \
 && mv /root/.cache/lynx/models/int4/embedder /models/embedder \
 && rm -rf /root/.cache
