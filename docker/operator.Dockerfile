# syntax=docker/dockerfile:1.7
# The lynx budget operator (kopf; operators/lynx_budget). Build context: the repository root.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements/operator.lock ./requirements/operator.lock
RUN pip install --no-cache-dir --prefix=/install --requirement requirements/operator.lock
COPY pyproject.toml README.md ./
COPY services ./services
COPY operators ./operators
RUN pip install --no-cache-dir --prefix=/install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 lynx && useradd --uid 10001 --gid lynx --no-create-home --shell /usr/sbin/nologin lynx
COPY --from=build /install /usr/local
USER 10001:10001
EXPOSE 8085
# The chart adds --namespace and --liveness; one replica, so no peering (see lynx_budget/handlers.py).
ENTRYPOINT ["kopf", "run", "--standalone", "--log-format=json", "--module", "lynx_budget.handlers"]
