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
    && /opt/venv/bin/pip install --no-compile --find-links /wheels --require-hashes \
       --requirement /wheels/requirements.txt

# The venv as it ships: no installer, and every module compiled ahead. The root filesystem
# is read-only, so what is not compiled here is compiled again at every start: a worker
# compiled pandas and the Kubernetes client each time it started, about 2 CPU-seconds, and
# 100 workers started at once kept both cores of the local node busy for minutes. pip
# compiles nothing (`--no-compile` above; what the venv's own pip left is removed); the caches
# are hash-based, unchecked (the files never change under a read-only root), the same for the
# same sources.
FROM deps AS venv
RUN /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
    && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/venv

# The project's wheel installed into the venv, every file it added copied under /files/, and
# compiled there as the venv is (an import fixes the code's file names to where it runs).
FROM deps AS project
COPY project/ /project/
RUN /opt/venv/bin/pip install --no-deps --no-compile /project/collectjob_operator-*.whl \
    && /opt/venv/bin/python -c "import importlib.metadata as m, pathlib, shutil; \
[(pathlib.Path('/files' + str(p)).parent.mkdir(parents=True, exist_ok=True), \
  shutil.copy2(p, '/files' + str(p))) \
 for p in (pathlib.Path(f.locate()).resolve() \
           for f in m.distribution('collectjob-operator').files) \
 if p.is_file() and '__pycache__' not in p.parts]" \
    && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /files

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
