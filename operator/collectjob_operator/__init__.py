"""The CollectJob operator: kopf handlers that drive one worker per job."""
