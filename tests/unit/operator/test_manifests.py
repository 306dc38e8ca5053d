"""The objects a CollectJob owns: ownership, least privilege, restricted pods, the env contract."""

from __future__ import annotations

import json

import pytest

from collectjob_api.contract import (
    CHECKPOINT_KEY,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_RETRY_FOR_SECONDS,
    ENV_CONFIG,
    ENV_SINK_URL,
    ENV_SOURCE_URL,
    WorkerConfig,
    WorkerIdentity,
    worker_labels,
)
from collectjob_operator import manifests
from collectjob_operator.job import CollectJob

IMAGE = "collectjob:test"


def owned_by(obj: dict, job: CollectJob) -> bool:
    (ref,) = obj["metadata"]["ownerReferences"]
    return (ref["uid"], ref["kind"], ref["name"], ref["controller"]) == (
        job.uid,
        "CollectJob",
        job.name,
        True,
    )


def test_every_child_is_owned_by_the_job_and_labelled(make_job):
    job = make_job()
    children = [
        manifests.checkpoint_configmap(job),
        manifests.service_account(job),
        manifests.role(job),
        manifests.role_binding(job),
        manifests.worker_deployment(job, IMAGE, 1),
    ]
    for obj in children:
        assert owned_by(obj, job), obj["kind"]
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["labels"] == worker_labels("orders")


def test_checkpoint_configmap_is_created_without_a_checkpoint(make_job):
    cm = manifests.checkpoint_configmap(make_job())
    assert cm["metadata"]["name"] == "orders-checkpoint"
    assert CHECKPOINT_KEY not in cm.get("data", {})


def test_worker_role_grants_only_its_own_configmap(make_job):
    role = manifests.role(make_job())
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["orders-checkpoint"],
            "verbs": ["get", "update", "patch"],
        }
    ]


def test_role_binding_binds_the_workers_service_account(make_job):
    rb = manifests.role_binding(make_job())
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "orders-worker",
    }
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "orders-worker", "namespace": "team-a"}
    ]


def pod_spec(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


def test_deployment_recreates_and_selects_its_own_pods(make_job):
    dep = manifests.worker_deployment(make_job(), IMAGE, 0)
    assert dep["metadata"]["name"] == "orders-worker"
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    selector = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_worker_pod_meets_the_restricted_pod_security_standard(make_job):
    spec = pod_spec(manifests.worker_deployment(make_job(), IMAGE, 1))
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert all("hostPath" not in v for v in spec["volumes"])


def test_worker_pod_runs_the_worker_with_its_service_account_and_grace(make_job):
    job = make_job(spec={"worker": {"terminationGracePeriodSeconds": 12, "metricsPort": 9200}})
    spec = pod_spec(manifests.worker_deployment(job, IMAGE, 1))
    (container,) = spec["containers"]
    assert container["command"] == ["tini", "--", "collectjob-worker", "run"]
    assert container["image"] == IMAGE
    assert spec["serviceAccountName"] == "orders-worker"
    assert spec["automountServiceAccountToken"] is True
    assert spec["terminationGracePeriodSeconds"] == 12
    assert container["ports"] == [{"name": "metrics", "containerPort": 9200, "protocol": "TCP"}]
    grace = next(e for e in container["env"] if e["name"] == "COLLECTJOB_GRACE_SECONDS")
    assert grace["value"] == "12"


def resolve_env(env: list[dict], secrets: dict[tuple[str, str], str] | None = None) -> dict:
    """Resolve fieldRefs and secretKeyRefs as a kubelet would, for a pod named p-1 at
    10.0.0.7 whose namespace holds `secrets` ((name, key) -> value)."""
    fields = {"metadata.namespace": "team-a", "metadata.name": "p-1", "status.podIP": "10.0.0.7"}

    def value(e: dict) -> str:
        if "value" in e:
            return str(e["value"])
        source = e["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return (secrets or {})[(ref["name"], ref["key"])]
        return fields[source["fieldRef"]["fieldPath"]]

    return {e["name"]: value(e) for e in env}


def test_worker_env_is_what_the_worker_reads(make_job):
    job = make_job(spec={"chunkBytes": 4096, "transform": {"columns": [{"name": "id"}]}})
    (container,) = pod_spec(manifests.worker_deployment(job, IMAGE, 1))["containers"]
    identity = WorkerIdentity.from_env(resolve_env(container["env"]))
    assert (identity.job, identity.namespace, identity.pod, identity.pod_ip) == (
        "orders",
        "team-a",
        "p-1",
        "10.0.0.7",
    )
    assert identity.configmap == "orders-checkpoint"
    assert identity.config == job.spec.worker_config()
    assert identity.config.chunk_bytes == 4096
    assert identity.config.sink.format == "jsonl"
    assert identity.config.transform == {"columns": [{"name": "id"}]}


def test_user_env_volumes_and_scheduling_pass_through_after_the_contract(make_job):
    worker = {
        "env": [{"name": "AWS_REGION", "value": "eu-west-1"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "batch", "operator": "Exists"}],
        "resources": {"limits": {"memory": "1Gi"}},
    }
    spec = pod_spec(manifests.worker_deployment(make_job(spec={"worker": worker}), IMAGE, 1))
    (container,) = spec["containers"]
    assert container["env"][-1] == {"name": "AWS_REGION", "value": "eu-west-1"}
    assert container["env"][0]["name"] == "COLLECTJOB_NAME"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "d"}} in spec["volumes"]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert container["resources"] == {"limits": {"memory": "1Gi"}}


def test_template_hash_follows_the_pod_template_not_the_replica_count(make_job):
    job = make_job()
    one, zero = (manifests.worker_deployment(job, IMAGE, n) for n in (1, 0))
    other = manifests.worker_deployment(make_job(spec={"chunkBytes": 2048}), IMAGE, 1)
    key = manifests.TEMPLATE_HASH_ANNOTATION
    assert one["metadata"]["annotations"][key] == zero["metadata"]["annotations"][key]
    assert one["metadata"]["annotations"][key] != other["metadata"]["annotations"][key]


def test_drift_is_a_replica_count_or_a_template_built_from_another_spec(make_job):
    job = make_job()
    desired = manifests.worker_deployment(job, IMAGE, 1)
    assert not manifests.deployment_drifted(desired, desired)
    assert manifests.deployment_drifted(manifests.worker_deployment(job, IMAGE, 0), desired)
    other = manifests.worker_deployment(make_job(spec={"chunkBytes": 2048}), IMAGE, 1)
    assert manifests.deployment_drifted(other, desired)


def test_worker_config_json_round_trips(make_job):
    job = make_job()
    (container,) = pod_spec(manifests.worker_deployment(job, IMAGE, 1))["containers"]
    text = next(e["value"] for e in container["env"] if e["name"] == ENV_CONFIG)
    assert WorkerConfig.from_json(text) == job.spec.worker_config()


def container_of(job) -> dict:
    (container,) = pod_spec(manifests.worker_deployment(job, IMAGE, 1))["containers"]
    return dict(container)


def test_worker_without_resources_gets_the_defaults(make_job):
    container = container_of(make_job())
    assert container["resources"] == manifests.DEFAULT_WORKER_RESOURCES
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]


def test_empty_resources_set_none_so_a_limit_range_decides(make_job):
    assert container_of(make_job(spec={"worker": {"resources": {}}}))["resources"] == {}


def test_urls_from_secrets_reach_the_worker_by_reference_only(make_job):
    signed = "https://bucket.example/in.csv?X-Amz-Signature=abc&X-Amz-Credential=k"
    job = make_job(
        spec={
            "source": {"urlFrom": {"secretKeyRef": {"name": "in-url", "key": "url"}}},
            "sink": {"urlFrom": {"secretKeyRef": {"name": "out-url", "key": "url"}}},
        }
    )
    container = container_of(job)
    assert "X-Amz" not in json.dumps(container)
    refs = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    assert refs[ENV_SOURCE_URL] == {"secretKeyRef": {"name": "in-url", "key": "url"}}
    assert refs[ENV_SINK_URL] == {"secretKeyRef": {"name": "out-url", "key": "url"}}
    secrets = {("in-url", "url"): signed, ("out-url", "url"): "s3://out/dir"}
    identity = WorkerIdentity.from_env(resolve_env(container["env"], secrets))
    assert (identity.config.source.url, identity.config.sink.url) == (signed, "s3://out/dir")


def test_a_missing_secret_url_is_named_without_a_value(make_job):
    job = make_job(spec={"source": {"urlFrom": {"secretKeyRef": {"name": "u", "key": "k"}}}})
    env = resolve_env(container_of(job)["env"], {("u", "k"): " "})
    with pytest.raises(ValueError, match="COLLECTJOB_SOURCE_URL"):
        WorkerIdentity.from_env(env)


def test_record_limit_and_retry_time_reach_the_worker(make_job):
    job = make_job(spec={"maxRecordBytes": 2 << 20, "retry": {"timeoutSeconds": 42}})
    identity = WorkerIdentity.from_env(resolve_env(container_of(job)["env"]))
    assert (identity.max_record_bytes, identity.retry_for_seconds) == (2 << 20, 42)
    defaults = WorkerIdentity.from_env(resolve_env(container_of(make_job())["env"]))
    assert defaults.max_record_bytes == DEFAULT_MAX_RECORD_BYTES
    assert defaults.retry_for_seconds == DEFAULT_RETRY_FOR_SECONDS


def test_env_from_passes_through_and_is_absent_when_not_given(make_job):
    env_from = [{"secretRef": {"name": "db"}}, {"configMapRef": {"name": "cfg"}, "prefix": "C_"}]
    assert container_of(make_job(spec={"worker": {"envFrom": env_from}}))["envFrom"] == env_from
    assert "envFrom" not in container_of(make_job())
