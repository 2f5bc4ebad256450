"""Backup quotas: the wire shape of ``GET /v1/{project_id}/quotas`` and the rule a new backup must pass.

Source: ``csbs-api-reference/api_description/quota_management/querying_quotas.rst`` (``backups``: number of
retained backups; ``backup_capacity``: storage capacity in GB, -1 = unlimited) and ``appendixes/error_codes.rst``
(CSBS.9006 "Quota exceeded for resources: %s").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError

GB = 1024**3


@dataclass(frozen=True)
class QuotaUsage:
    """A project's limits and use. ``used_bytes``: stored bytes of its backups; limits -1 = unlimited."""

    backups_quota: int
    capacity_quota_gb: int
    backups_used: int
    used_bytes: int

    @property
    def capacity_used_gb(self) -> int:
        """Used capacity in whole GB, rounded up (a few bytes count as 1 GB)."""
        return math.ceil(self.used_bytes / GB)

    def to_wire(self) -> dict:
        """``{"quotas": {"resources": [...]}}`` as in the reference's example."""
        return {
            "quotas": {
                "resources": [
                    {"type": "backup_capacity", "unit": "GB", "quota": self.capacity_quota_gb,
                     "used": self.capacity_used_gb},
                    {"type": "backups", "quota": self.backups_quota, "used": self.backups_used},
                ]
            }
        }


def check_new_backup(usage: QuotaUsage) -> None:
    """Raise CSBS.9006 unless one more backup fits: fewer backups than the quota, capacity not used up."""
    exceeded = []
    if usage.backups_quota >= 0 and usage.backups_used + 1 > usage.backups_quota:
        exceeded.append("backups")
    if usage.capacity_quota_gb >= 0 and usage.used_bytes >= usage.capacity_quota_gb * GB:
        exceeded.append("backup_capacity")
    if exceeded:
        raise CSBSError(codes.QUOTA_EXCEEDED, ",".join(exceeded))
