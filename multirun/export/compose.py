"""`multirun export compose`: one Compose service per account, each with a named volume.

``compose.yaml`` runs ``multirun run-account`` once per enabled account from the image the
top-level Dockerfile builds; ``config/`` holds a copy of runner.yaml (its ``state_dir``
set to the volume) and the strategy modules it imports, mounted read-only. Credentials
pass from the environment of ``docker compose`` by variable name: no value in any file.
No top-level ``name:`` (Compose v1, Debian 12's ``docker-compose`` 1.29, refuses it): the
project is named after the directory, or ``-p NAME``; the file is valid for v1 and v2.
"""

from __future__ import annotations

from typing import Any

import yaml

from multirun.export.kubernetes import PROBE_PERIOD_S
from multirun.export.plan import CONFIG_MOUNT, CONFIG_NAME, STATE_MOUNT, ExportPlan
from multirun.export.write import Output

CONFIG_DIR = "config"  # next to compose.yaml


def render(plan: ExportPlan, *, name: str, image: str) -> Output:
    """``compose.yaml`` and the ``config/`` directory it mounts."""
    plan.require_copyable()
    files = {f"{CONFIG_DIR}/{CONFIG_NAME}": plan.copied_config(STATE_MOUNT)}
    for rel, path in plan.modules:
        files[f"{CONFIG_DIR}/{rel}"] = path.read_text(encoding="utf-8")
    files["compose.yaml"] = (
        "# Written by `multirun export compose`. Build the image from the multirun sources\n"
        f"# (docker build -t {image} .), export the variables below, then:\n"
        f"# docker compose -p {name} up -d   (Compose v1: docker-compose -p {name} up -d)\n"
        + yaml.safe_dump(document(plan, name=name, image=image), sort_keys=False, width=100)
    )
    return Output(files=files)


def document(plan: ExportPlan, *, name: str, image: str) -> dict[str, Any]:
    config = f"{CONFIG_MOUNT}/{CONFIG_NAME}"
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    command_tail = []
    if plan.metrics_port is not None:  # the container's address, seen by its network
        command_tail = ["--metrics-listen", f"0.0.0.0:{plan.metrics_port}"]
    for account in plan.accounts:
        volume = f"state-{account}"
        volumes[volume] = {}
        services[account] = {
            "image": image,
            "command": ["multirun", "run-account", config, account, *command_tail],
            "restart": "unless-stopped",
            "stop_signal": "SIGTERM",
            "stop_grace_period": f"{plan.stop_grace_s}s",
            # Names only: each takes its value from the environment of `docker compose`.
            "environment": [var.name for var in plan.variables] + ["PYTHONUNBUFFERED=1"],
            "volumes": [
                f"./{CONFIG_DIR}:{CONFIG_MOUNT}:ro",
                f"{volume}:{STATE_MOUNT}",
            ],
            "working_dir": STATE_MOUNT,
            "healthcheck": {
                "test": ["CMD", "multirun", "health", config, account],
                "interval": f"{PROBE_PERIOD_S}s",
                "timeout": "10s",
                "retries": 3,
                "start_period": "30s",
            },
        }
        if plan.metrics_port is not None:  # to the project's network only: no host port
            services[account]["expose"] = [str(plan.metrics_port)]
    return {"services": services, "volumes": volumes}
