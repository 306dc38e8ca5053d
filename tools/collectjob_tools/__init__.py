"""The people-facing surfaces over the CollectJob API: the `kubectl collectjob` plugin and the
`collectjob-console` web console. They speak to the API server only through
`collectjob_api.client`, and never import the operator or the worker (import-linter)."""
