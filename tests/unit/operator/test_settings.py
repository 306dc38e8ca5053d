"""kopf settings: children are label-selected by the API server, watches time out."""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource

from collectjob_operator import settings
from collectjob_operator.cache import CHILD_KINDS


def resource(group: str, version: str, plural: str, kind: str) -> Resource:
    return Resource(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        singular=kind.lower(),
        namespaced=True,
    )


def test_every_child_kind_is_label_selected_on_the_server_and_jobs_are_not():
    configured = kopf.OperatorSettings()
    settings.configure(configured)
    selectors = configured.watching.label_selectors
    for child in CHILD_KINDS:
        res = resource(child.group, child.version, child.plural, child.kind)
        assert list(selectors.collect(res)) == [
            "app.kubernetes.io/managed-by=collectjob-operator,collect.dev/job"
        ], child.kind
    jobs = resource("collect.dev", "v1alpha1", "collectjobs", "CollectJob")
    assert list(selectors.collect(jobs)) == []


def test_a_silent_watch_is_dropped_after_the_client_timeout():
    configured = kopf.OperatorSettings()
    settings.configure(configured)
    assert configured.watching.server_timeout < configured.watching.client_timeout
    assert configured.networking.request_timeout is not None


def test_kopf_builds_no_essence_because_no_handler_compares_one():
    """NoEssence is right only while every handler is an event handler or an index: a
    create/update/resume handler or a daemon would need kopf's change detection back."""
    import collectjob_operator.handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    assert registry._watching.get_all_handlers(), "the event handlers are registered"
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    configured = kopf.OperatorSettings()
    settings.configure(configured)
    assert isinstance(configured.persistence.diffbase_storage, settings.NoEssence)
