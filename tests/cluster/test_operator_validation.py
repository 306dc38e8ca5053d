"""The API server refuses invalid CollectJobs itself, with a message a person can act on."""

from __future__ import annotations

import json

import pytest
import yaml


def manifest(namespace: str, name: str = "bad", **spec) -> str:
    body = {
        "apiVersion": "collect.dev/v1alpha1",
        "kind": "CollectJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"url": "file:///data/in.csv"},
            "sink": {"url": "file:///data/out"},
            **spec,
        },
    }
    return yaml.safe_dump(body)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"sink": {"url": "file:///o", "format": "xml"}},
            'spec.sink.format: Unsupported value: "xml"',
        ),
        (
            {"chunkBytes": 4096},
            "spec.chunkBytes in body should be greater than or equal to 1048576",
        ),
        ({"maxRecordBytes": 10}, "spec.maxRecordBytes in body should be greater than or equal"),
        (
            {"retry": {"timeoutSeconds": 0}},
            "spec.retry.timeoutSeconds in body should be greater than or equal to 1",
        ),
        ({"backoffLimit": -2}, "spec.backoffLimit in body should be greater than or equal to 0"),
        (
            {"source": {"url": "ftp://host/in.csv"}},
            "spec.source.url: Forbidden: must start with file:///, s3://, http:// or https://",
        ),
        (
            {"sink": {"url": "https://host/out"}},
            "spec.sink.url: Forbidden: must start with file:/// or s3://",
        ),
        (
            {
                "source": {
                    "url": "file:///in.csv",
                    "urlFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                }
            },
            "exactly one of url and urlFrom must be set",
        ),
        ({"sink": {}}, "exactly one of url and urlFrom must be set"),
        (
            {
                "worker": {
                    "env": [
                        {
                            "name": "A",
                            "value": "x",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ]
                }
            },
            "set value or valueFrom, not both",
        ),
        (
            {
                "worker": {
                    "env": [
                        {
                            "name": "A",
                            "valueFrom": {
                                "secretKeyRef": {"name": "s", "key": "k"},
                                "configMapKeyRef": {"name": "c", "key": "k"},
                            },
                        }
                    ]
                }
            },
            "set exactly one of secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef",
        ),
        (
            {"worker": {"envFrom": [{"secretRef": {"name": "s"}, "prefix": "COLLECTJOB_"}]}},
            "envFrom must not use a COLLECTJOB_ prefix",
        ),
        (
            {"worker": {"volumes": [{"name": "v", "secret": {}}]}},
            "spec.worker.volumes[0].secret.secretName: Required value",
        ),
        ({"shutdown": "Pause"}, 'spec.shutdown: Unsupported value: "Pause"'),
        (
            {"worker": {"env": [{"name": "COLLECTJOB_CONFIG", "value": "{}"}]}},
            "must not set COLLECTJOB_* variables",
        ),
        (
            {"worker": {"env": [{"name": "AWS_ACCESS_KEY_ID", "value": "AKIA0000"}]}},
            "spec.worker.env[0]: Forbidden: AWS_ACCESS_KEY_ID looks like a credential and must "
            "not be given as a literal value: put it in a Secret and use valueFrom.secretKeyRef",
        ),
        (
            {
                "worker": {
                    "env": [
                        {"name": "LOG_LEVEL", "value": "debug"},
                        {"name": "db_password", "value": "hunter2"},
                    ]
                }
            },
            "spec.worker.env[1]: Forbidden: db_password looks like a credential",
        ),
        (
            {"worker": {"env": [{"name": "AWS_SESSION_TOKEN", "value": "x"}]}},
            "AWS_SESSION_TOKEN looks like a credential",
        ),
        (
            {"worker": {"env": [{"name": "Api_Secret", "value": "x"}]}},
            "Api_Secret looks like a credential",
        ),
    ],
)
def test_invalid_spec_is_refused_on_create(cluster, namespace, crd, spec, expected):
    result = cluster.kubectl("apply", "-f", "-", input=manifest(namespace, **spec), check=False)
    assert result.returncode != 0
    assert expected in result.stderr


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("source", {"source": {"url": "https://reader:pa55word@host/in.csv"}}),
        ("sink", {"sink": {"url": "s3://KEYID:pa55word@bucket/out"}}),
    ],
)
def test_credentials_in_a_url_are_refused_without_being_echoed(
    cluster, namespace, crd, field, spec
):
    result = cluster.kubectl("apply", "-f", "-", input=manifest(namespace, **spec), check=False)
    assert result.returncode != 0
    assert (
        f"spec.{field}.url: Forbidden: must not carry credentials (user:password@host): put "
        "the URL in a Secret and use urlFrom.secretKeyRef, or pass the credentials with "
        "spec.worker.env valueFrom.secretKeyRef"
    ) in result.stderr
    assert "pa55word" not in result.stderr


def test_credentials_by_secret_reference_and_at_signs_in_paths_are_accepted(
    cluster, namespace, crd
):
    secret_ref = {"valueFrom": {"secretKeyRef": {"name": "aws", "key": "secret"}}}
    body = manifest(
        namespace,
        name="good",
        source={"url": "https://host/v@2/in.csv"},
        worker={
            "env": [
                {"name": "AWS_SECRET_ACCESS_KEY", **secret_ref},
                {"name": "LOG_LEVEL", "value": "debug"},
            ]
        },
    )
    cluster.kubectl("apply", "-f", "-", input=body)
    created = json.loads(
        cluster.kubectl("get", "cjob", "good", "-n", namespace, "-o", "json").stdout
    )
    assert created["spec"]["worker"]["env"][0] == {"name": "AWS_SECRET_ACCESS_KEY", **secret_ref}


def patch(cluster, namespace: str, spec: dict):
    return cluster.kubectl(
        "patch",
        "cjob",
        "good",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": spec}),
        check=False,
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"source": {"url": "file:///data/other.csv"}}, "spec.source cannot change after creation"),
        ({"sink": {"format": "parquet"}}, "spec.sink cannot change after creation"),
        ({"transform": {"columns": [{"name": "id"}]}}, "spec.transform cannot be added or removed"),
    ],
)
def test_immutable_fields_cannot_change(cluster, namespace, crd, change, expected):
    cluster.kubectl("apply", "-f", "-", input=manifest(namespace, name="good"))
    result = patch(cluster, namespace, change)
    assert result.returncode != 0
    assert expected in result.stderr


def test_shutdown_is_one_way(cluster, namespace, crd):
    cluster.kubectl("apply", "-f", "-", input=manifest(namespace, name="good"))
    assert patch(cluster, namespace, {"shutdown": "Stop"}).returncode == 0
    back = patch(cluster, namespace, {"shutdown": ""})
    assert back.returncode != 0
    assert "spec.shutdown is one-way: it was 'Stop' and cannot be changed to ''" in back.stderr
    other = patch(cluster, namespace, {"shutdown": "Terminate"})
    assert other.returncode != 0 and "one-way" in other.stderr


def test_defaults_are_filled_in_by_the_api_server(cluster, namespace, crd):
    cluster.kubectl("apply", "-f", "-", input=manifest(namespace, name="good"))
    spec = json.loads(cluster.kubectl("get", "cjob", "good", "-n", namespace, "-o", "json").stdout)[
        "spec"
    ]
    assert (spec["suspend"], spec["shutdown"], spec["backoffLimit"]) == (False, "", 3)
    assert spec["maxRecordBytes"] == 64 * 1024 * 1024
    assert spec["retry"] == {"timeoutSeconds": 300}
    assert spec["worker"]["terminationGracePeriodSeconds"] == 30
    assert spec["sink"]["format"] == "csv"
    assert spec["source"]["header"] is True
