# The lynx tokenizer service. Build context: the repository root.
# PYTHON_IMAGE may be any Debian-based image with python3 and its venv module; the default is the
# pinned upstream image. Builds behind a TLS-inspecting proxy pass its CA bundle as the secret
# "ca-certificates": it is mounted for the install steps only and never lands in a layer.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The models image (docker/models.Dockerfile); skaffold passes it as MODELS_IMAGE.
ARG MODELS_IMAGE=lynx-models:0.1.0
FROM ${MODELS_IMAGE} AS models

FROM ${PYTHON_IMAGE} AS build
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/serve.lock ./requirements/serve.lock
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv /opt/lynx && /opt/lynx/bin/pip install --requirement requirements/serve.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN --mount=type=secret,id=ca-certificates,target=/etc/ssl/certs/ca-certificates.crt \
    /opt/lynx/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/lynx/bin:$PATH
RUN groupadd --gid 10001 lynx && useradd --uid 10001 --gid lynx --no-create-home --shell /usr/sbin/nologin lynx
COPY --from=build /opt/lynx /opt/lynx
COPY --from=models /models/decoder/tokenizer.json /models/decoder/chat_template.jinja /models/decoder/genai_config.json /models/decoder/
# hadolint ignore=DL3064
ENV LYNX_TOKENIZER_MODEL_DIR=/models/decoder
# hadolint ignore=DL3064
ENV LYNX_TOKENIZER_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8081
ENTRYPOINT ["python", "-m", "lynx.cli", "serve", "tokenizer"]
