"""`multirun export kubernetes`: a StatefulSet per account, a ConfigMap, a Secret template.

Per enabled account one ``StatefulSet`` with ``replicas: 1`` (at most one pod per
identity, unlike a Deployment's rolling update, which starts the new pod before the old
one is gone) and a ``ReadWriteOnce`` volume claim for its state directory; the config
and the strategy modules it imports in a ConfigMap; credentials from a Secret by
reference (``secret.yaml``: names, empty values; kept out of ``kustomization.yaml`` so
that re-applying never blanks the real one). See docs/deploy.md.
"""

from __future__ import annotations

from typing import Any

import yaml

from multirun.core.errors import UsageError
from multirun.export.plan import CONFIG_MOUNT, CONFIG_NAME, STATE_MOUNT, ExportPlan
from multirun.export.write import Output

SECRET_MODE = 0o600
# Sized from the measured footprint (docs/deploy.md): one `multirun run-account` process
# (random strategy, 1 s interval, against the simulator) has an RSS of 47 MiB (PSS 31 MiB)
# and uses 9 millicores; each `multirun health` probe peaks at 37 MiB for 0.4 s of CPU,
# so two probes every PROBE_PERIOD_S add ~25 millicores on average. The memory limit
# leaves room for a strategy's own data and a probe beside the worker.
RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
STATE_STORAGE = "1Gi"  # a journal holds a few KiB per order
UID = 10001  # the image's `multirun` user (see the Dockerfile)
PROBE_PERIOD_S = 30  # a probe starts an interpreter: 0.4 s of CPU each time
METRICS = "metrics"  # the port's name
MAX_NAME = 52  # a StatefulSet's pods carry `<name>-<10 chars of hash>` in a 63-char label


def render(plan: ExportPlan, *, name: str, image: str) -> Output:
    """The manifests of ``plan``: one file per object, and a kustomization of them."""
    plan.require_copyable()
    check_names(plan, name)
    objects: dict[str, dict[str, Any]] = {
        "configmap.yaml": config_map(plan, name),
        "service.yaml": service(name, plan.metrics_port),
    }
    for account in plan.accounts:
        objects[f"statefulset-{_dns(account)}.yaml"] = stateful_set(plan, account, name, image)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/part-of": name}}],
        "resources": list(objects),
    }
    files = {path: _dump(obj) for path, obj in objects.items()}
    files["kustomization.yaml"] = (
        "# `kubectl apply -k .` applies these; secret.yaml is applied once, by hand,\n"
        "# after filling it in (re-applying it from here would blank the real one).\n"
        + _dump(kustomization)
    )
    return Output(files=files, credentials={"secret.yaml": (secret(plan, name), SECRET_MODE)})


def object_name(name: str, account: str) -> str:
    """The StatefulSet's name for ``account``: a DNS label."""
    full = f"{name}-{_dns(account)}"
    if full.endswith("-"):
        raise UsageError(f"{full!r}: a Kubernetes name cannot end with '-': rename {account!r}")
    if len(full) > MAX_NAME:
        raise UsageError(f"{full!r}: longer than {MAX_NAME} characters; use a shorter --name")
    return full


def labels(name: str, account: str | None = None) -> dict[str, str]:
    found = {"app.kubernetes.io/name": "multirun", "app.kubernetes.io/instance": name}
    if account is not None:
        found["multirun.io/account"] = account
    return found


def config_map(plan: ExportPlan, name: str) -> dict[str, Any]:
    data = {CONFIG_NAME: plan.copied_config(STATE_MOUNT)}
    for rel, path in plan.modules:
        data[_key(rel)] = path.read_text(encoding="utf-8")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "labels": labels(name)},
        "data": data,
    }


def service(name: str, metrics_port: int | None = None) -> dict[str, Any]:
    """The headless Service the StatefulSets name; with ``metrics:`` it lists each pod's
    ``metrics`` port, so Prometheus finds every pod (``role: endpoints``, a ServiceMonitor)."""
    spec: dict[str, Any] = {"clusterIP": "None", "selector": labels(name)}
    if metrics_port is not None:
        spec["ports"] = [{"name": METRICS, "port": metrics_port, "targetPort": METRICS}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": spec,
    }


def stateful_set(plan: ExportPlan, account: str, name: str, image: str) -> dict[str, Any]:
    config = f"{CONFIG_MOUNT}/{CONFIG_NAME}"
    health = ["multirun", "health", config, account]
    period = PROBE_PERIOD_S
    items = [{"key": CONFIG_NAME, "path": CONFIG_NAME}]
    items += [{"key": _key(rel), "path": rel} for rel, _ in plan.modules]
    command = ["multirun", "run-account", config, account]
    port = plan.metrics_port
    if port is not None:  # the pod's own address: reachable by Prometheus, one per pod
        command += ["--metrics-listen", f"0.0.0.0:{port}"]
    container: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "workingDir": STATE_MOUNT,
        "env": [_env(var.name, var.required, name) for var in plan.variables]
        + [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": RESOURCES,
        # Liveness: ticking (a HALTED worker still ticks: restarting it would lift the
        # halt). Readiness: ticking and not HALTED.
        "livenessProbe": _probe([*health[:2], "--liveness", *health[2:]], period, 3, 30),
        "readinessProbe": _probe(health, period, 1, 5),
        # Pod Security "restricted": no escalation, no capability, RuntimeDefault seccomp.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "state", "mountPath": STATE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    template_metadata: dict[str, Any] = {"labels": labels(name, account)}
    if port is not None:
        container["ports"] = [{"name": METRICS, "containerPort": port, "protocol": "TCP"}]
        template_metadata["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": object_name(name, account), "labels": labels(name, account)},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": labels(name, account)},
            "template": {
                "metadata": template_metadata,
                "spec": {
                    "terminationGracePeriodSeconds": plan.stop_grace_s,
                    # The worker never talks to the Kubernetes API: no token in the pod.
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{name}-config", "items": items}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "state"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": STATE_STORAGE}},
                    },
                }
            ],
        },
    }


def secret(plan: ExportPlan, name: str) -> str:
    """The Secret template: every variable's name with an empty value, never a value.

    Valid YAML as written and after each step its header tells: a value filled in
    between the quotes, a commented-out line uncommented by removing its ``# ``.
    """
    lines = [
        "# Fill in each value between the quotes (a quote inside is written twice: ''); to",
        "# set a commented-out one (it has a default in the config), remove its '# ' first.",
        "# Then: kubectl apply -f secret.yaml",
        "# (or: kubectl create secret generic NAME --from-env-file=FILE).",
        "# Written by `multirun export kubernetes` with names only (0600): never commit it",
        "# filled in.",
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {name}-credentials",
        "type: Opaque",
        "stringData:",
    ]
    for var in plan.variables:
        what = "secret" if var.secret else "setting"
        prefix = "" if var.required else "# "
        need = "required" if var.required else "optional"
        lines.append(f"  {prefix}{var.name}: ''  # {what}, {need}")
    return "\n".join(lines) + "\n"


def _env(var: str, required: bool, name: str) -> dict[str, Any]:
    ref = {"name": f"{name}-credentials", "key": var, "optional": not required}
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}


def _probe(command: list[str], period: int, failures: int, delay: int) -> dict[str, Any]:
    return {
        "exec": {"command": command},
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": failures,
    }


def _dns(account: str) -> str:
    return account.replace("_", "-")


def _key(rel: str) -> str:
    """A ConfigMap key for a file path (keys cannot hold ``/``)."""
    return rel.replace("/", "__")


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


def check_names(plan: ExportPlan, name: str) -> None:
    """Two accounts whose names differ only by ``_`` / ``-`` would share a StatefulSet."""
    seen: dict[str, str] = {}
    for account in plan.accounts:
        full = object_name(name, account)
        if full in seen:
            raise UsageError(f"accounts {seen[full]!r} and {account!r} both map to {full!r}")
        seen[full] = account
