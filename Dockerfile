# One image for the operator and the worker. Build: docker build -t collectjob:dev .
# The operator's Deployment runs `collectjob-operator`; worker pods run `collectjob-worker run`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY api ./api
COPY operator ./operator
COPY worker ./worker
# requirements.lock pins every runtime dependency to the versions the tests ran with.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --constraint requirements.lock .

FROM python:3.11-slim
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin collectjob
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["collectjob-operator"]
