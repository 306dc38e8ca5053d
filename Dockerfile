# One image for the operator and the worker: the operator's Deployment runs
# `collectjob-operator`; worker pods run `collectjob-worker run`.
# The build context is build/image/: deps/ holds a wheel of every dependency pinned to
# requirements.lock and their hashes (requirements.txt), project/ the project's wheel;
# nothing is fetched during the build. The final image has the dependencies and the project
# in separate layers (the venv without the project, then the project's own files), so a
# change of the sources rebuilds and ships only the small one.
#   here:       make image   (BASE = a Debian bookworm root filesystem made by debootstrap)
#   elsewhere:  python -m localcluster.image --context-only
#               docker build -f Dockerfile -t collectjob:dev build/image
ARG BASE=python:3.11-slim

FROM ${BASE} AS deps
ENV PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY deps/ /wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /wheels --require-hashes \
       --requirement /wheels/requirements.txt

# The venv as it ships: no installer, no bytecode caches.
FROM deps AS venv
RUN /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# The project's wheel installed into the venv, and every file it added copied under /files/.
FROM deps AS project
COPY project/ /project/
RUN /opt/venv/bin/pip install --no-deps --no-compile /project/collectjob_operator-*.whl \
    && /opt/venv/bin/python -c "import importlib.metadata as m, pathlib, shutil; \
[(pathlib.Path('/files' + str(p)).parent.mkdir(parents=True, exist_ok=True), \
  shutil.copy2(p, '/files' + str(p))) \
 for p in (pathlib.Path(f.locate()).resolve() \
           for f in m.distribution('collectjob-operator').files) \
 if p.is_file() and '__pycache__' not in p.parts]"

# tini as PID 1 (a signal to PID 1 without a handler is dropped: see WORKER_COMMAND in
# manifests.py). The debootstrap base has it; a registry's python image gets it from apt here,
# so the final stage has no package manager step.
FROM ${BASE} AS init
RUN if [ ! -x /usr/bin/tini ]; then \
      apt-get update && apt-get install -y --no-install-recommends tini=0.19.* \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# The user, then every program of the base but python3 removed: the operator and the worker
# start no subprocess, so whoever gets into a pod finds no shell, package manager or
# coreutils. Images built on this one RUN in exec form (examples/processor/README.md).
# Whiteouts only: the base's layer is shared as it is.
FROM ${BASE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin collectjob \
    && find /usr/local/bin /usr/local/sbin /usr/bin /usr/sbin -mindepth 1 -maxdepth 1 \
       \( -type f -o -type l \) ! -name 'python3*' -delete
COPY --from=init /usr/bin/tini /usr/bin/tini
COPY --from=venv /opt/venv /opt/venv
COPY --from=project /files/ /
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["tini", "--"]
CMD ["collectjob-operator"]
