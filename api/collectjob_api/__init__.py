"""What the operator, the worker and the user tools share: the CollectJob API's names and
labels, the worker's environment contract, the checkpoint model and the credentials rule.

The boundary is one-way: `collectjob_operator` and `collectjob_worker` import this package
and never each other (checked by import-linter in `make lint`). Nothing here may import
pyarrow, s3fs or kopf, so every tool can depend on it cheaply.
"""
