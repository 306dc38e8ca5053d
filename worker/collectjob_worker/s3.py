"""Access to S3-compatible object stores through fsspec/s3fs, shared by sources and sinks.

Credentials and the endpoint come from the standard AWS environment, which a CollectJob sets
through `spec.worker.env` (from a Secret): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION/AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) for a store
other than AWS, such as MinIO or a local test server. Which endpoints may be reached is
urlpolicy's rule.
"""

from __future__ import annotations

import os
from typing import Any

from collectjob_worker.urlpolicy import UrlPolicy, guarded_resolver

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
IMDS_DISABLED_ENV = "AWS_EC2_METADATA_DISABLED"


def filesystem(policy: UrlPolicy | None = None) -> Any:
    """An S3 filesystem whose every connection obeys `policy` (by default from the env):
    a custom endpoint is checked now, each connection's address by the resolver, and the
    proxy variables are ignored (`proxies={}` stops botocore reading them).

    The instance metadata service is switched off for this process (botocore reads the
    switch only from the environment): a job without credentials of its own must not borrow
    the node's IAM role, which would let a tenant read any bucket the node can."""
    import s3fs

    os.environ[IMDS_DISABLED_ENV] = "true"

    policy = policy or UrlPolicy.from_env()
    endpoint = next((os.environ[k] for k in ENDPOINT_ENV if os.environ.get(k)), None)
    client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
    if endpoint:
        policy.check_url(endpoint, "S3 endpoint")
    return s3fs.S3FileSystem(
        skip_instance_cache=True,
        client_kwargs=client_kwargs,
        config_kwargs={"proxies": {}, "connector_args": {"resolver": guarded_resolver(policy)}},
    )


def path_of(url: str) -> str:
    """`bucket/key` for an s3:// URL, as s3fs names objects."""
    return url.removeprefix("s3://").rstrip("/")


def transient(e: BaseException) -> bool:
    """Connection trouble and server-side errors; s3fs maps missing objects and denied
    access to FileNotFoundError and PermissionError, which are not worth retrying."""
    if isinstance(e, (FileNotFoundError, PermissionError)):
        return False
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("botocore", "aiohttp")
