"""``opencsbs bank retain`` as a use case: the storage's retention (S3 Object Lock) for the backups written before
the retention locks that now cover them. The work is :func:`opencsbs.engine.retain.apply_storage_retention` (the
housekeeping pass runs it too, for the projects whose locks changed)."""

from __future__ import annotations

from opencsbs.engine.retain import RetainReport, apply_storage_retention

__all__ = ["RetainReport", "apply_storage_retention"]
