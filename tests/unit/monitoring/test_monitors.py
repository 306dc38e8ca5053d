"""The ServiceMonitor and PodMonitor select what deploy/ and the operator really create: the
operator's pod and metrics port, and every worker pod with its named metrics port."""

from __future__ import annotations

from typing import Any

import yaml

from collectjob_operator import manifests
from collectjob_operator.job import CollectJob
from localcluster.monitoring import MONITORING_DIR, POD_MONITOR, SERVICE_MONITOR, load_yaml
from localcluster.paths import REPO_ROOT
from localcluster.prometheus import pod_monitor_targets

SAMPLE = REPO_ROOT / "deploy" / "samples" / "collectjob.yaml"
OPERATOR = REPO_ROOT / "deploy" / "common" / "operator.yaml"
SERVICE = MONITORING_DIR / "operator-metrics-service.yaml"


def selected(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return match_labels.items() <= labels.items()


def container_port_names(pod_spec: dict[str, Any]) -> set[str]:
    return {p["name"] for c in pod_spec["containers"] for p in c.get("ports", ())}


def worker_template() -> dict[str, Any]:
    """The worker pod template the operator builds for the sample CollectJob."""
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"] |= {"namespace": "team-a", "uid": "00000000-0000-0000-0000-000000000001"}
    deployment = manifests.worker_deployment(CollectJob.from_body(sample), "img", replicas=1)
    return dict(deployment["spec"]["template"])


def test_pod_monitor_selects_worker_pods_on_their_metrics_port() -> None:
    template = worker_template()
    monitor = load_yaml(POD_MONITOR)["spec"]
    assert selected(monitor["selector"]["matchLabels"], template["metadata"]["labels"])
    assert monitor["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in container_port_names(template["spec"])
    assert endpoint["honorLabels"] is True, "the worker's own namespace label must survive"


def test_service_monitor_reaches_the_operator_pod_through_the_metrics_service() -> None:
    operator = load_yaml(OPERATOR)
    service = load_yaml(SERVICE)
    monitor = load_yaml(SERVICE_MONITOR)["spec"]
    pod = operator["spec"]["template"]
    assert selected(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["namespaceSelector"]["matchNames"] == [operator["metadata"]["namespace"]]
    assert service["metadata"]["namespace"] == operator["metadata"]["namespace"]
    assert selected(service["spec"]["selector"], pod["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in container_port_names(pod["spec"])
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["honorLabels"] is True, "per-job series carry the job's own namespace"


def test_the_test_discovery_keeps_what_the_pod_monitor_selects() -> None:
    """`pod_monitor_targets` stands in for the Prometheus Operator in the cluster test."""
    template = worker_template()

    def pod(name: str, phase: str, labels: dict[str, str]) -> dict[str, Any]:
        meta = {"name": name, "namespace": "team-a", "labels": labels}
        return {
            "metadata": meta,
            "spec": template["spec"],
            "status": {"phase": phase, "podIP": "127.1.0.7"},
        }

    worker_labels = template["metadata"]["labels"]
    pods = [
        pod("running", "Running", worker_labels),
        pod("done", "Succeeded", worker_labels),
        pod("other", "Running", {"app.kubernetes.io/component": "worker"}),
    ]
    port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert pod_monitor_targets(load_yaml(POD_MONITOR), pods) == [
        {"targets": [f"127.1.0.7:{port}"], "labels": {"namespace": "team-a", "pod": "running"}}
    ]
