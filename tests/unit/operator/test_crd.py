"""The CRD and the typed models agree: every status field declared, defaults the same."""

from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import get_args

import yaml
from pydantic import TypeAdapter

from collectjob_api import spec as spec_module
from collectjob_api.contract import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_METRICS_PORT,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
)
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
