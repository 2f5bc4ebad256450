"""The backup engine: durable jobs (``jobs``), one module per job kind (``backup``, ``restore``, ``delete``, with
their shared parts in ``_common`` and the kind table in ``kinds``), the workers that run them (``worker``), the
policy scheduler (``scheduler``) and housekeeping (``housekeeping``). ``docs/development.md`` walks one backup
from ``protect`` to the chunk file."""
