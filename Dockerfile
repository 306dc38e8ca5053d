# One image for the operator and the worker: the operator's Deployment runs
# `collectjob-operator`; worker pods run `collectjob-worker run`.
# The build context is build/image/: deps/ holds a wheel of every dependency pinned to
# requirements.lock and their hashes (requirements.txt), project/ the project's wheel;
# nothing is fetched during the build. Dependencies and project are separate layers, so a
# change of the sources rebuilds only the small one.
#   here:       make image   (BASE = a Debian bookworm root filesystem made by debootstrap)
#   elsewhere:  python -m localcluster.image --context-only
#               docker build -f Dockerfile -t collectjob:dev build/image
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY deps/ /wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /wheels --require-hashes \
       --requirement /wheels/requirements.txt
COPY project/ /project/
RUN /opt/venv/bin/pip install --no-deps /project/collectjob_operator-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin collectjob
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["collectjob-operator"]
