"""One CollectJob as the operator sees it: identity, spec and status, parsed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collectjob_api.contract import GROUP, KIND, PROVENANCE_LABELS, VERSION
from collectjob_api.spec import CollectJobSpec
from collectjob_operator.status import JobStatus

API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class JobRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class CollectJob:
    ref: JobRef
    uid: str
    generation: int
    spec: CollectJobSpec
    status: JobStatus
    provenance: Mapping[str, str] = field(default_factory=dict)
    """The job's collect.dev/client and collect.dev/request labels, copied onto its events."""
    resource_version: str = ""
    """The version this copy was read at: the status write based on it is conditional."""

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CollectJob:
        meta = body["metadata"]
        ref = JobRef(namespace=meta["namespace"], name=meta["name"])
        try:
            spec = CollectJobSpec.from_dict(body.get("spec") or {})
        except ValueError as e:
            raise ValueError(f"CollectJob {ref}: {e}") from e
        return cls(
            ref=ref,
            uid=meta["uid"],
            generation=int(meta.get("generation", 0)),
            spec=spec,
            status=JobStatus.from_dict(body.get("status")),
            provenance={
                k: v for k, v in (meta.get("labels") or {}).items() if k in PROVENANCE_LABELS
            },
            resource_version=str(meta.get("resourceVersion", "")),
        )

    def owner_reference(self) -> dict[str, Any]:
        """Makes every child garbage-collected with the job; no finalizer needed."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
