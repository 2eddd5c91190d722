# syntax=docker/dockerfile:1.7
# The lynx decoder service. Build context: the repository root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The models image (docker/models.Dockerfile); skaffold passes it as MODELS_IMAGE.
ARG MODELS_IMAGE=lynx-models:0.1.0
FROM ${MODELS_IMAGE} AS models

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements/serve.lock ./requirements/serve.lock
RUN pip install --no-cache-dir --prefix=/install --requirement requirements/serve.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --prefix=/install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 lynx && useradd --uid 10001 --gid lynx --no-create-home --shell /usr/sbin/nologin lynx
COPY --from=build /install /usr/local
COPY --from=models /models/decoder /models/decoder
ENV LYNX_DECODER_MODEL_DIR=/models/decoder
ENV LYNX_DECODER_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8083
ENTRYPOINT ["python", "-m", "lynx.cli", "serve", "decoder"]
