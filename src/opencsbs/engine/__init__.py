"""The backup engine: durable jobs (``jobs``), their steps (``steps``) and the workers that run them (``worker``)."""
