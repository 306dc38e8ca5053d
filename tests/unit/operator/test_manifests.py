"""The objects a CollectJob owns: ownership, least privilege, restricted pods, the env contract."""

from __future__ import annotations

from collectjob_api.contract import (
    CHECKPOINT_KEY,
    ENV_CONFIG,
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
    assert container["command"] == ["collectjob-worker", "run"]
    assert container["image"] == IMAGE
    assert spec["serviceAccountName"] == "orders-worker"
    assert spec["automountServiceAccountToken"] is True
    assert spec["terminationGracePeriodSeconds"] == 12
    assert container["ports"] == [{"name": "metrics", "containerPort": 9200, "protocol": "TCP"}]
    grace = next(e for e in container["env"] if e["name"] == "COLLECTJOB_GRACE_SECONDS")
    assert grace["value"] == "12"


def resolve_env(env: list[dict]) -> dict[str, str]:
    """Resolve fieldRefs as a kubelet would, for a pod named p-1 at 10.0.0.7."""
    fields = {"metadata.namespace": "team-a", "metadata.name": "p-1", "status.podIP": "10.0.0.7"}
    return {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in env
    }


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
