# One image for every role: `webserver` (default), `daemon`, `migrate`, `resolve-taxa`.
#   docker build -t observing-pipelines .            (Cloud Build / CI)
#   docker build --build-arg EXTRAS=cloudrun .       (with the Cloud Run run launcher)
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# Dependencies first, from the pinned pyproject alone (an empty package stands in), so a code
# change rebuilds only the last layers.
COPY pyproject.toml ./
RUN mkdir observing_pipelines && touch README.md observing_pipelines/__init__.py \
 && /opt/venv/bin/pip install --no-compile ".${EXTRAS:+[$EXTRAS]}" \
 && rm -rf observing_pipelines README.md build
COPY README.md ./
COPY observing_pipelines ./observing_pipelines
RUN /opt/venv/bin/pip install --no-compile --no-deps --force-reinstall . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY dagster.yaml workspace.yaml ./
COPY infra/instance ./instance
# Instance configurations from one source, the project's dagster.yaml:
#   home            Cloud Run (compute logs in GCS)
#   home-cloud-run  Cloud Run, one Cloud Run Job per Dagster run
#   home-local      anywhere else (local compute logs), e.g. .ci/container-check
RUN mkdir -p /opt/dagster/home /opt/dagster/home-cloud-run /opt/dagster/home-local \
 && cp dagster.yaml /opt/dagster/home-local/dagster.yaml \
 && cat dagster.yaml instance/compute-logs-gcs.yaml > /opt/dagster/home/dagster.yaml \
 && cat /opt/dagster/home/dagster.yaml instance/run-launcher-cloud-run.yaml \
      > /opt/dagster/home-cloud-run/dagster.yaml

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --home-dir /opt/dagster --shell /usr/sbin/nologin dagster
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=dagster:dagster /opt/dagster /opt/dagster
COPY --from=build /src/workspace.yaml /opt/dagster/app/workspace.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_WORKSPACE=/opt/dagster/app/workspace.yaml \
    PORT=8080
WORKDIR /opt/dagster/app
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["observing-pipelines"]
CMD ["webserver"]
