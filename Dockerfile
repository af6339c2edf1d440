# multirun, installed from these sources: `docker build -t multirun:0.1.0 .`
# Runs one account per container: multirun run-account /etc/multirun/runner.yaml NAME
# (see `multirun export compose|kubernetes` and docs/deploy.md). No download at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md runner.yaml.example ./
COPY multirun ./multirun
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/multirun multirun \
    && mkdir -p /etc/multirun /var/lib/multirun \
    && chown 10001:10001 /var/lib/multirun \
    && chmod 0700 /var/lib/multirun

# The state directory: a named volume (Compose) or a claim (Kubernetes) is mounted here;
# a new named volume takes this directory's owner, so the worker can write its journal.
VOLUME /var/lib/multirun
WORKDIR /var/lib/multirun
USER 10001

# SIGTERM (docker stop, Kubernetes, Compose): the worker finishes its tick, applies on_stop.
STOPSIGNAL SIGTERM
CMD ["multirun", "--help"]
