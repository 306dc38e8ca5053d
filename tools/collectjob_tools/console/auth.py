"""Who the user is (TokenReview, with the console's own identity) and what they may do
(SelfSubjectAccessReview, with the user's token). The console's own ServiceAccount needs
only `create tokenreviews`; it never reads or changes a CollectJob itself."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from collectjob_api.contract import GROUP, PLURAL

MAX_TOKEN_CHARS = 16 * 1024
"""Bearer tokens are JWTs of a few KiB; anything longer is refused before it is sent on."""


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Rights:
    """What the user may do with CollectJobs in one namespace; decides which buttons show."""

    act: bool = False
    create: bool = False


def review_token(console: client.ApiClient, token: str, timeout: float) -> Identity | None:
    """The user behind `token` if the API server authenticates it, else None."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    result = client.AuthenticationV1Api(console).create_token_review(
        review, _request_timeout=timeout
    )
    status = result.status
    if not status or not status.authenticated or not status.user:
        return None
    return Identity(user=status.user.username or "", groups=tuple(status.user.groups or ()))


def _allowed(user: client.ApiClient, namespace: str, verb: str, timeout: float) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group=GROUP, resource=PLURAL, namespace=namespace, verb=verb
            )
        )
    )
    result = client.AuthorizationV1Api(user).create_self_subject_access_review(
        review, _request_timeout=timeout
    )
    return bool(result.status and result.status.allowed)


def rights(user: client.ApiClient, namespace: str, timeout: float) -> Rights:
    return Rights(
        act=_allowed(user, namespace, "patch", timeout),
        create=_allowed(user, namespace, "create", timeout),
    )
