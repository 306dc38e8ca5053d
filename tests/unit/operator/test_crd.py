"""The CRD and the typed models agree: every status field declared, defaults the same."""

from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import get_args

import yaml
from kubernetes import client
from pydantic import TypeAdapter

from collectjob_api import spec as spec_module
from collectjob_api.contract import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_METRICS_PORT,
    DEFAULT_RETRY_FOR_SECONDS,
    GROUP,
    KIND,
    MIN_CHUNK_BYTES,
    PLURAL,
    VERSION,
)
from collectjob_operator import guard, settings
from collectjob_operator.status import ConditionType, JobStatus, Phase

CRD = Path(__file__).resolve().parents[3] / "crds" / "collectjob.yaml"


def crd() -> dict:
    return yaml.safe_load(CRD.read_text())


def version() -> dict:
    (v,) = crd()["spec"]["versions"]
    return v


def schema(*path: str) -> dict:
    node = version()["schema"]["openAPIV3Schema"]
    for key in path:
        node = node["properties"][key]
    return node


def test_names_match_the_contract():
    c = crd()
    assert c["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert c["spec"]["group"] == GROUP
    assert c["spec"]["names"]["kind"] == KIND
    assert c["spec"]["names"]["shortNames"] == ["cjob"]
    assert c["spec"]["names"]["categories"] == ["collect"]
    assert version()["name"] == VERSION
    assert version()["subresources"] == {"status": {}}


def test_every_status_field_the_operator_writes_is_declared():
    declared = set(schema("status")["properties"])
    assert set(JobStatus().to_dict()) == declared


def test_phase_and_condition_enums_match_the_models():
    assert schema("status", "phase")["enum"] == [str(p) for p in Phase]
    condition = schema("status", "conditions")["items"]
    assert condition["properties"]["type"]["enum"] == [str(t) for t in ConditionType]
    assert set(condition["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def test_printer_columns():
    columns = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    wide = ["Message", "Client", "Request", "Throttle"]
    assert list(columns) == ["Phase", "Progress", "Rows", "Suspend", "Age", *wide]
    assert all(columns[n]["priority"] == 1 for n in wide)
    assert all("priority" not in c for n, c in columns.items() if n not in wide)
    # Label keys hold a dot: the JSONPath must escape it (checked on the real API server
    # by tests/cluster/test_plugin.py, which reads the wide columns).
    assert columns["Client"]["jsonPath"] == r".metadata.labels.collect\.dev/client"
    assert columns["Request"]["jsonPath"] == r".metadata.labels.collect\.dev/request"


def test_defaults_match_the_spec_parser():
    spec = schema("spec")["properties"]
    assert spec["chunkBytes"]["default"] == DEFAULT_CHUNK_BYTES
    assert spec["backoffLimit"]["default"] == spec_module.DEFAULT_BACKOFF_LIMIT
    worker = spec["worker"]["properties"]
    assert worker["metricsPort"]["default"] == DEFAULT_METRICS_PORT
    assert worker["terminationGracePeriodSeconds"]["default"] == DEFAULT_GRACE_SECONDS
    assert spec["shutdown"]["enum"] == [str(s) for s in spec_module.Shutdown]
    assert spec["sink"]["properties"]["format"]["enum"] == ["csv", "parquet", "jsonl"]


def test_transform_schema_mirrors_the_workers_transform():
    from collectjob_worker import transform

    column = schema("spec", "transform", "columns")["items"]
    assert set(column["properties"]) == transform.COLUMN_KEYS
    assert column["properties"]["type"]["enum"] == list(transform.TYPES)


def _crd_defaults(node: dict, path: tuple[str, ...] = ()):
    """(path, default) for every property of the CRD schema below `node` that declares one."""
    for key, prop in node.get("properties", {}).items():
        if "default" in prop:
            yield (*path, key), prop["default"]
        yield from _crd_defaults(prop, (*path, key))


def _model_defaults(model: type, path: tuple[str, ...] = ()):
    """(path, field) for every field of the model and of the models it nests, by CRD name."""
    for name, info in model.__pydantic_fields__.items():
        key = (*path, info.alias or name)
        yield key, info
        # A nested model, or an optional one (`ProcessConfig | None`).
        for candidate in (info.annotation, *get_args(info.annotation)):
            if is_dataclass(candidate):
                yield from _model_defaults(candidate, key)
                break


def test_every_crd_default_is_the_models_default():
    fields = dict(_model_defaults(spec_module.CollectJobSpec))
    crd_defaults = dict(_crd_defaults(schema("spec")))
    assert crd_defaults, "the CRD declares no defaults: the schema walk is broken"
    for path, default in crd_defaults.items():
        assert path in fields, f"the CRD defaults spec.{'.'.join(path)}, which no model has"
        info = fields[path]
        as_parsed = TypeAdapter(info.annotation).validate_python(default)
        assert as_parsed == info.get_default(call_default_factory=True), ".".join(path)


def test_every_model_default_that_means_something_is_in_the_crd():
    """A default the API server does not apply would differ between kubectl and the operator."""
    crd_defaults = dict(_crd_defaults(schema("spec")))
    for path, info in _model_defaults(spec_module.CollectJobSpec):
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        if default in (None, "", (), {}) or is_dataclass(default):
            continue
        assert path in crd_defaults, f"spec.{'.'.join(path)} has a default only in the model"


ROOT = CRD.parents[1]


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_new_limits_match_the_contract():
    spec = schema("spec")["properties"]
    assert spec["chunkBytes"]["minimum"] == MIN_CHUNK_BYTES == 1 << 20
    assert spec["maxRecordBytes"]["default"] == DEFAULT_MAX_RECORD_BYTES
    assert spec["retry"]["properties"]["timeoutSeconds"]["default"] == DEFAULT_RETRY_FOR_SECONDS


def test_every_pod_volume_type_is_declared_and_only_others_pass_through_unchecked():
    """A volume type the schema does not declare would be pruned or refused; one declared
    with preserve-unknown-fields is never checked by the schema, only by the policy."""
    volume = schema("spec", "worker", "volumes")["items"]["properties"]
    assert set(volume) == set(client.V1Volume.attribute_map.values())
    checked = {"name", "persistentVolumeClaim", "configMap", "secret", "emptyDir"}
    for name, node in volume.items():
        opaque = node.get("x-kubernetes-preserve-unknown-fields", False)
        assert opaque == (name not in checked), name
    value_from = schema("spec", "worker", "env")["items"]["properties"]["valueFrom"]
    assert "x-kubernetes-preserve-unknown-fields" not in value_from
    assert set(value_from["properties"]) == {
        "secretKeyRef",
        "configMapKeyRef",
        "fieldRef",
        "resourceFieldRef",
    }


def test_url_rules_never_echo_the_url():
    """An Invalid error prints the value; every rule on a URL is Forbidden with a fixed text."""
    for part in ("source", "sink"):
        rules = schema("spec", part, "url")["x-kubernetes-validations"]
        assert len(rules) == 3
        for rule in rules:
            assert rule["reason"] == "FieldValueForbidden", rule
            assert "messageExpression" not in rule, rule


def test_admission_policy_ships_with_the_crd_and_is_what_the_operator_checks():
    assert (ROOT / "crds" / "admission-policy.yaml").name in yaml.safe_load(
        (ROOT / "crds" / "kustomization.yaml").read_text()
    )["resources"]
    docs = load_all(ROOT / "crds" / "admission-policy.yaml")
    (policy,) = of_kind(docs, "ValidatingAdmissionPolicy")
    (binding,) = of_kind(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == guard.ADMISSION_POLICY
    assert binding["spec"] == {"policyName": guard.ADMISSION_POLICY, "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    reader = next(
        d
        for d in load_all(ROOT / "deploy" / "common" / "rbac.yaml")
        if d["metadata"]["name"] == "collectjob-operator-admission-reader"
        and d["kind"] == "ClusterRole"
    )
    (rule,) = reader["rules"]
    assert rule["resourceNames"] == [guard.ADMISSION_POLICY] and rule["verbs"] == ["get"]


def test_the_policys_default_image_is_the_operators():
    (policy,) = of_kind(
        load_all(ROOT / "crds" / "admission-policy.yaml"), "ValidatingAdmissionPolicy"
    )
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    (deployment,) = of_kind(load_all(ROOT / "deploy" / "common" / "operator.yaml"), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert variables["defaultImage"] == f"'{settings.DEFAULT_WORKER_IMAGE}'"
    assert env[settings.ENV_WORKER_IMAGE] == settings.DEFAULT_WORKER_IMAGE


def test_the_operator_writes_policy_names_the_operators_service_account():
    (sa,) = of_kind(load_all(ROOT / "deploy" / "common" / "rbac.yaml"), "ServiceAccount")
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    docs = load_all(ROOT / "deploy" / "common" / "operator-writes-policy.yaml")
    (policy,) = of_kind(docs, "ValidatingAdmissionPolicy")
    (condition,) = policy["spec"]["matchConditions"]
    assert f"'{user}'" in condition["expression"]


def test_the_namespaced_role_has_the_cluster_wide_rules():
    (cluster_role,) = of_kind(load_all(ROOT / "deploy" / "rbac.yaml"), "ClusterRole")
    (role,) = of_kind(load_all(ROOT / "deploy" / "namespaced" / "watched-namespace.yaml"), "Role")
    assert role["rules"] == cluster_role["rules"]
