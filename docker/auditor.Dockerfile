# syntax=docker/dockerfile:1.7
# The lynx auditor service. Build context: the repository root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

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
ENV LYNX_AUDITOR_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8084
ENTRYPOINT ["python", "-m", "lynx.cli", "serve", "auditor"]
