"""The operator starts no worker while the admission policy on CollectJob authors is missing.

Without the policy's binding the API server no longer checks authors, so the operator holds
every job with a condition saying why, and goes on by itself once the policy is back.
"""

from __future__ import annotations

from localcluster.paths import REPO_ROOT as ROOT

POLICY = "collectjob-author-rights"


def test_jobs_wait_for_the_admission_policy_and_run_once_it_is_back(
    cluster, operator, collectjob, wait_for
):
    cluster.kubectl("delete", "validatingadmissionpolicybinding", POLICY)
    try:
        job = collectjob(rows=500)

        def held() -> dict | None:
            conditions = job.status().get("conditions") or []
            return next(
                (c for c in conditions if c.get("reason") == "AdmissionPolicyMissing"), None
            )

        condition = wait_for(held, timeout=60, message="condition AdmissionPolicyMissing")
        assert (condition["type"], condition["status"]) == ("Progressing", "False")
        assert POLICY in condition["message"] and "--allow-unguarded" in condition["message"]
        assert job.phase() == "Pending"
        assert job.deployment() is None and job.pods() == []
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    wait_for(lambda: job.phase() == "Succeeded", timeout=180, message="phase Succeeded")
    assert job.output_ids() == job.source_ids()
