"""The CollectJob worker: chunked, checkpointed, resumable CSV processing."""
