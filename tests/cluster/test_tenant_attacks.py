"""A tenant who may create CollectJobs and nothing else tries to get more through the operator.

The tenant is a real user of the local cluster (a client certificate from its CA, see
tenant_identity), with a Role for `collectjobs` only. Every attack the API server can see is
refused at `kubectl apply` with a message naming the field and the rule; the same
CollectJobs are accepted for `builder`, a user who holds the rights they use. Attacks on the
CRD's own rules (credentials in URLs and env) are refused for everyone, without the secret
being echoed.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from conftest import RESTRICTED
from localcluster.client import Cluster
from operator_fixtures import write_csv
from tenant_identity import User, grant, issue_user

AUTHOR_RULES = [
    {
        "apiGroups": ["collect.dev"],
        "resources": ["collectjobs"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    }
]
BUILDER_RULES = [
    *AUTHOR_RULES,
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
    {
        "apiGroups": [""],
        "resources": ["secrets", "configmaps", "persistentvolumeclaims"],
        "verbs": ["get"],
    },
]
NEEDS_PODS = "needs the right to create pods in namespace {ns}, which tenant does not have"


def job(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "collect.dev/v1alpha1",
        "kind": "CollectJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"url": "file:///data/in.csv"},
            "sink": {"url": "file:///data/out"},
            **spec,
        },
    }


def env(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"worker": {"env": list(entries)}}


def secret_env(name: str = "admin-creds") -> dict[str, Any]:
    return {"name": "X", "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}}}


def volume(**source: Any) -> dict[str, Any]:
    return {"worker": {"volumes": [{"name": "v", **source}]}}


@dataclass(frozen=True)
class Tenancy:
    namespace: str
    tenant: User
    builder: User


@pytest.fixture(scope="module")
def tenancy(cluster: Cluster, crd: None, tmp_path_factory) -> Iterator[Tenancy]:
    """A restricted namespace holding an admin's Secret, ConfigMap and PVC; `tenant` may
    only work with CollectJobs there, `builder` may also create pods and read those."""
    core = client.CoreV1Api(cluster.api_client())
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=RESTRICTED))
    )
    admin_objects = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "admin-creds"},
            "stringData": {"password": "hunter2-admin"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "admin-config"},
            "data": {"endpoint": "https://internal.example"},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "admin-data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(admin_objects))
    users = tmp_path_factory.mktemp("users")
    grant(cluster, namespace, "tenant", AUTHOR_RULES, "collectjob-author")
    grant(cluster, namespace, "builder", BUILDER_RULES, "collectjob-builder")
    tenancy = Tenancy(
        namespace, issue_user(cluster, "tenant", users), issue_user(cluster, "builder", users)
    )
    assert tenancy.tenant.whoami() == "tenant"
    yield tenancy
    core.delete_namespace(namespace)


def name_for(attack: str) -> str:
    return "a-" + "".join(c if c.isalnum() else "-" for c in attack.lower()).strip("-")[:50]


# attack -> (spec, what the refusal says). Refused for `tenant`, accepted for `builder`.
RIGHTS_ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "another image": (
        {"worker": {"image": "evil.example/miner:latest"}},
        "spec.worker.image: an image other than the installation default "
        "(collectjob:dev) " + NEEDS_PODS,
    ),
    "hostPath root": (
        volume(hostPath={"path": "/"}),
        "spec.worker.volumes: volume v is of a type other than "
        "persistentVolumeClaim, configMap, secret and emptyDir, which " + NEEDS_PODS,
    ),
    "nfs volume": (
        volume(nfs={"server": "10.0.0.9", "path": "/exports"}),
        "spec.worker.volumes: volume v is of a type other than",
    ),
    "projected service account token": (
        volume(
            projected={"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault"}}]}
        ),
        "spec.worker.volumes: volume v is of a type other than",
    ),
    "csi volume": (
        volume(csi={"driver": "secrets-store.csi.k8s.io"}),
        "spec.worker.volumes: volume v is of a type other than",
    ),
    "ephemeral volume": (
        volume(
            ephemeral={
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Ti"}},
                    }
                }
            }
        ),
        "spec.worker.volumes: volume v is of a type other than",
    ),
    "secret volume": (
        volume(secret={"secretName": "admin-creds"}),
        "spec.worker.volumes[0].secret: tenant may not get secrets admin-creds in "
        "namespace {ns} (a CollectJob may only use what its author can read)",
    ),
    "configMap volume": (
        volume(configMap={"name": "admin-config"}),
        "spec.worker.volumes[0].configMap: tenant may not get configmaps admin-config",
    ),
    "PVC volume": (
        volume(persistentVolumeClaim={"claimName": "admin-data"}),
        "spec.worker.volumes[0].persistentVolumeClaim: tenant may not get "
        "persistentvolumeclaims admin-data",
    ),
    "secretKeyRef env": (
        env(secret_env()),
        "spec.worker.env[0].valueFrom.secretKeyRef: tenant may not get secrets admin-creds",
    ),
    "secretKeyRef env after harmless ones": (
        env(
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            secret_env(),
        ),
        "spec.worker.env[2].valueFrom.secretKeyRef: tenant may not get secrets admin-creds",
    ),
    "configMapKeyRef env": (
        env(
            {
                "name": "X",
                "valueFrom": {"configMapKeyRef": {"name": "admin-config", "key": "endpoint"}},
            }
        ),
        "spec.worker.env[0].valueFrom.configMapKeyRef: tenant may not get configmaps admin-config",
    ),
    "envFrom secret": (
        {"worker": {"envFrom": [{"secretRef": {"name": "admin-creds"}}]}},
        "spec.worker.envFrom[0].secretRef: tenant may not get secrets admin-creds",
    ),
    "envFrom configMap": (
        {"worker": {"envFrom": [{"configMapRef": {"name": "admin-config"}}]}},
        "spec.worker.envFrom[0].configMapRef: tenant may not get configmaps admin-config",
    ),
    "source urlFrom a foreign Secret": (
        {"source": {"urlFrom": {"secretKeyRef": {"name": "admin-creds", "key": "password"}}}},
        "spec.source.urlFrom.secretKeyRef: tenant may not get secrets admin-creds",
    ),
    "sink urlFrom a foreign Secret": (
        {"sink": {"urlFrom": {"secretKeyRef": {"name": "admin-creds", "key": "password"}}}},
        "spec.sink.urlFrom.secretKeyRef: tenant may not get secrets admin-creds",
    ),
    "nodeSelector onto the control plane": (
        {"worker": {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}},
        "spec.worker.nodeSelector: choosing nodes " + NEEDS_PODS,
    ),
    "toleration of every taint": (
        {"worker": {"tolerations": [{"operator": "Exists"}]}},
        "spec.worker.tolerations: tolerating taints " + NEEDS_PODS,
    ),
}

# attack -> (spec, what the refusal says, a secret it must not echo). Refused for everyone.
CREDENTIAL_ATTACKS: dict[str, tuple[dict[str, Any], str, str]] = {
    "S3 presigned source URL": (
        {
            "source": {
                "url": "https://b.s3.example/in.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                "&X-Amz-Credential=AKIDEXAMPLE%2F20260101&X-Amz-Signature=5eC12e7"
            }
        },
        "spec.source.url: Forbidden: must not carry a credential in its query string",
        "5eC12e7",
    ),
    "Azure SAS source URL": (
        {"source": {"url": "https://a.blob.example/c/in.csv?sv=2024&sig=S3cr"}},
        "spec.source.url: Forbidden: must not carry a credential",
        "S3cr",
    ),
    "token in the query": (
        {"source": {"url": "http://h.example/in.csv?token=tok3n"}},
        "spec.source.url: Forbidden: must not carry a credential",
        "tok3n",
    ),
    "access_token in the query": (
        {"source": {"url": "https://h.example/in.csv?a=1&access_token=acc3ss"}},
        "spec.source.url: Forbidden: must not carry a credential",
        "acc3ss",
    ),
    "security token in the sink": (
        {"sink": {"url": "s3://bucket/out?X-Amz-Security-Token=sessi0n"}},
        "spec.sink.url: Forbidden: must not carry a credential",
        "sessi0n",
    ),
    "userinfo in the source": (
        {"source": {"url": "https://reader:pa55word@h.example/in.csv"}},
        "spec.source.url: Forbidden: must not carry credentials (user:password@host)",
        "pa55word",
    ),
    "unsupported scheme with a secret path": (
        {"source": {"url": "ftp://h.example/pa55word/in.csv"}},
        "spec.source.url: Forbidden: must start with file:///, s3://, http:// or https://",
        "pa55word",
    ),
    "literal DB_PASSWORD": (
        env({"name": "DB_PASSWORD", "value": "hunter2"}),
        "spec.worker.env[0]: Forbidden: DB_PASSWORD looks like a credential",
        "hunter2",
    ),
    "literal API_KEY": (
        env({"name": "API_KEY", "value": "k3y"}),
        "API_KEY looks like a credential",
        "k3y",
    ),
    "literal client secret": (
        env({"name": "oauth_client_secret", "value": "s3cret"}),
        "oauth_client_secret looks like a credential",
        "s3cret",
    ),
    "user:pass@ in a harmless-named value": (
        env({"name": "DSN", "value": "postgres://app:hunter2@db.example/x"}),
        "spec.worker.env[0]: Forbidden: DSN carries credentials in a URL",
        "hunter2",
    ),
    "signed URL in a harmless-named value": (
        env({"name": "FEED", "value": "https://h.example/f?sig=s1gnature"}),
        "FEED carries a credential in a URL's query string",
        "s1gnature",
    ),
}


@pytest.mark.parametrize("attack", sorted(RIGHTS_ATTACKS))
def test_tenant_is_refused_what_it_may_not_do_itself(tenancy, attack):
    spec, expected = RIGHTS_ATTACKS[attack]
    result = tenancy.tenant.apply(job(name_for(attack), tenancy.namespace, **spec))
    assert result.returncode != 0, f"{attack} was admitted"
    assert "ValidatingAdmissionPolicy 'collectjob-author-rights'" in result.stderr
    assert expected.format(ns=tenancy.namespace) in result.stderr, result.stderr


@pytest.mark.parametrize("attack", sorted(RIGHTS_ATTACKS))
def test_the_same_job_is_accepted_for_a_user_with_the_rights(tenancy, attack):
    spec, _ = RIGHTS_ATTACKS[attack]
    name = name_for(attack)
    result = tenancy.builder.apply(job(name, tenancy.namespace, **spec))
    assert result.returncode == 0, result.stderr
    tenancy.builder.kubectl("delete", "cjob", name, "-n", tenancy.namespace)


@pytest.mark.parametrize("attack", sorted(CREDENTIAL_ATTACKS))
def test_credentials_in_urls_and_env_are_refused_without_echo(tenancy, attack):
    spec, expected, secret = CREDENTIAL_ATTACKS[attack]
    for user in (tenancy.tenant, tenancy.builder):
        result = user.apply(job(name_for(attack), tenancy.namespace, **spec))
        assert result.returncode != 0, f"{attack} was admitted for {user.name}"
        assert expected in result.stderr, result.stderr
        assert secret not in result.stderr + result.stdout


def test_tenant_may_run_a_plain_job_and_suspend_it_but_not_add_a_secret(tenancy):
    ns = tenancy.namespace
    plain = job(
        "plain",
        ns,
        worker={
            "env": [{"name": "LOG_LEVEL", "value": "info"}],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    )
    assert tenancy.tenant.apply(plain).returncode == 0
    suspend = json.dumps({"spec": {"suspend": True}})
    patched = tenancy.tenant.kubectl(
        "patch", "cjob", "plain", "-n", ns, "--type", "merge", "-p", suspend
    )
    assert patched.returncode == 0, patched.stderr
    grown = copy.deepcopy(plain)
    grown["spec"]["worker"]["env"].append(secret_env())
    result = tenancy.tenant.apply(grown)
    assert result.returncode != 0
    assert "spec.worker.env[1].valueFrom.secretKeyRef: tenant may not get secrets" in result.stderr
    env_now = tenancy.tenant.kubectl("get", "cjob", "plain", "-n", ns, "-o", "json").stdout
    assert json.loads(env_now)["spec"]["worker"]["env"] == plain["spec"]["worker"]["env"]


def test_chunks_smaller_than_one_mebibyte_are_refused(tenancy):
    result = tenancy.builder.apply(job("tiny-chunks", tenancy.namespace, chunkBytes=4096))
    assert result.returncode != 0
    assert "spec.chunkBytes in body should be greater than or equal to 1048576" in result.stderr


def test_twelve_objects_readable_only_by_name_are_checked_and_a_thirteenth_is_refused(
    cluster, tenancy
):
    """Each check by name costs a fixed share of the API server's CEL budget: twelve must
    fit, and beyond them the author needs the right to read all objects of the kind."""
    ns = tenancy.namespace
    names = [f"s{i}" for i in range(13)]
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "stringData": {"k": "v"}}
        for n in names
    ]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(secrets))
    rules = [
        *AUTHOR_RULES,
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]},
    ]
    grant(cluster, ns, "tenant", rules, "named-secrets-reader")
    try:
        refs = [
            {"name": f"E{i}", "valueFrom": {"secretKeyRef": {"name": n, "key": "k"}}}
            for i, n in enumerate(names)
        ]
        twelve = tenancy.tenant.apply(job("twelve", ns, worker={"env": refs[:12]}))
        assert twelve.returncode == 0, twelve.stderr
        thirteen = tenancy.tenant.apply(job("thirteen", ns, worker={"env": refs}))
        assert thirteen.returncode != 0
        assert "beyond the first 12, each needs the right to get all objects" in thirteen.stderr
    finally:
        cluster.kubectl("delete", "role,rolebinding", "named-secrets-reader", "-n", ns)


# --- With the operator: a tenant's job never takes over an admin's objects. ---


def admin_objects(namespace: str) -> list[dict[str, Any]]:
    """What an admin made before: ServiceAccount etl-worker bound to `edit`, and a
    RoleBinding ci-worker, named as the workers of jobs `etl` and `ci` would be."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "etl-worker", "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ci-worker", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "etl-worker", "namespace": namespace}],
        },
    ]


def snapshot(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    out = {}
    for kind, name in (("serviceaccount", "etl-worker"), ("rolebinding", "ci-worker")):
        obj = cluster.kubectl_json("get", kind, name, "-n", namespace)
        meta = obj["metadata"]
        out[kind] = {
            "resourceVersion": meta["resourceVersion"],
            "uid": meta["uid"],
            "owners": meta.get("ownerReferences"),
            "labels": meta.get("labels"),
            "subjects": obj.get("subjects"),
        }
    return out


def name_taken(handle_status: dict[str, Any]) -> str:
    failed = next((c for c in handle_status.get("conditions", []) if c["type"] == "Failed"), None)
    return str(failed["message"]) if failed and failed.get("reason") == "NameTaken" else ""


def test_a_job_named_after_admin_objects_never_touches_them(
    cluster, namespace, operator, tmp_path, wait_for
):
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(admin_objects(namespace)))
    before = snapshot(cluster, namespace)
    grant(cluster, namespace, "tenant", AUTHOR_RULES, "collectjob-author")
    tenant = issue_user(cluster, "tenant", tmp_path / "users")
    for name in ("etl", "ci"):
        assert tenant.apply(job(name, namespace)).returncode == 0

    def status(name: str) -> dict[str, Any]:
        return dict(cluster.kubectl_json("get", "cjob", name, "-n", namespace).get("status") or {})

    etl = wait_for(lambda: name_taken(status("etl")), timeout=60, message="etl fails NameTaken")
    ci = wait_for(lambda: name_taken(status("ci")), timeout=60, message="ci fails NameTaken")
    assert "ServiceAccount" in etl and "etl-worker" in etl
    assert "RoleBinding" in ci and "ci-worker" in ci
    assert snapshot(cluster, namespace) == before
    pods = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    assert all(p["spec"].get("serviceAccountName") != "etl-worker" for p in pods)
    for name in ("etl", "ci"):
        assert tenant.kubectl("delete", "cjob", name, "-n", namespace).returncode == 0
    wait_for(
        lambda: not cluster.kubectl_json("get", "cjob", "-n", namespace)["items"],
        timeout=60,
        message="the jobs to be gone",
    )
    # The garbage collector had nothing of ours to follow: the admin's objects stay as they were.
    assert snapshot(cluster, namespace) == before


# --- With the operator: what the rights allow also runs. ---


def test_builders_job_with_a_url_from_a_secret_runs_to_success(
    cluster, namespace, operator, tmp_path, data_volume, wait_for
):
    """The source URL lives only in a Secret; the worker gets it by reference, and the
    Deployment, status and events never contain it."""
    source = write_csv(tmp_path / "in.csv", 2000)
    sink = tmp_path / "out"
    url = f"file://{source}"
    cluster.kubectl(
        "create", "secret", "generic", "source-url", "-n", namespace, f"--from-literal=url={url}"
    )
    grant(cluster, namespace, "builder", BUILDER_RULES, "collectjob-builder")
    builder = issue_user(cluster, "builder", tmp_path / "users")
    body = job(
        "from-secret",
        namespace,
        source={"urlFrom": {"secretKeyRef": {"name": "source-url", "key": "url"}}},
        sink={"url": f"file://{sink}", "format": "jsonl"},
        worker=data_volume.into(
            {
                "env": [
                    {
                        "name": "FEED_URL",
                        "valueFrom": {"secretKeyRef": {"name": "source-url", "key": "url"}},
                    }
                ]
            }
        ),
    )
    result = builder.apply(body)
    assert result.returncode == 0, result.stderr

    def phase() -> str | None:
        status = cluster.kubectl_json("get", "cjob", "from-secret", "-n", namespace).get("status")
        return (status or {}).get("phase")

    wait_for(lambda: phase() == "Succeeded", timeout=180, message="phase Succeeded")
    rows = sum(len(p.read_text().splitlines()) for p in sorted(Path(sink).glob("part-*")))
    assert rows == 2000
    deployment = cluster.kubectl(
        "get", "deployment", "from-secret-worker", "-n", namespace, "-o", "json"
    ).stdout

    def all_events() -> str | None:
        """The namespace's events once the last one (Completed, posted after the status it
        tells of) is among them."""
        text = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        return text if '"Completed"' in text else None

    events = wait_for(all_events, timeout=30, message="event Completed")
    status = json.dumps(cluster.kubectl_json("get", "cjob", "from-secret", "-n", namespace))
    for text in (deployment, events, status, operator.log()):
        assert str(source) not in text
