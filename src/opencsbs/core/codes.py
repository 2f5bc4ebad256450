"""The CSBS error-code catalogue.

Source: ``csbs-api-reference/appendixes/error_codes.rst`` (status, code, message template). Codes that the
reference does not define but a client still sees (authentication, unknown routes) are listed at the end and
documented in ``docs/errors.md``.

Every code is a :class:`Code` with the HTTP status the reference gives and its message template; ``%s``
placeholders are filled in order by :meth:`Code.format`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """One error code: ``code`` like ``"CSBS.6006"``, HTTP ``status``, message ``template`` with ``%s`` slots."""

    code: str
    status: int
    template: str

    def format(self, *args: object) -> str:
        """Fill the template's ``%s`` slots with ``args`` (missing ones stay ``%s``-free: ``"?"``)."""
        n = self.template.count("%s")
        values = tuple(str(a) for a in args[:n]) + ("?",) * max(0, n - len(args))
        return self.template % values if n else self.template


def _c(code: str, status: int, template: str) -> Code:
    return Code(code, status, template)


# --- from appendixes/error_codes.rst -------------------------------------------------------------------
POLICY_OVER_LIMIT = _c("CSBS.0001", 400, "Service over limit")
DIFFERENT_STORAGE_TYPES = _c("CSBS.0002", 400, "Volume of services from different storagetype")
POLICY_EXECUTING = _c("CSBS.1001", 500, "The policy is executing backup.")
RESOURCE_IN_PROTECTING = _c("CSBS.1002", 500, "resource_in_protecting")
PLAN_ITEM_EXECUTING = _c("CSBS.2001", 500, "item in plan is executing")
ITEM_IN_EXECUTING = _c("CSBS.2003", 400, "item in executing")
ITEM_IN_PLAN_EXECUTING = _c("CSBS.2004", 400, "item in plan executing")
POLICY_NOT_FOUND = _c("CSBS.3000", 404, "plan not found")
CHECKPOINT_ITEM_NOT_FOUND = _c("CSBS.3001", 404, "Checkpoint_item (%s) is not found.")
CHECKPOINT_ITEM_NOT_AVAILABLE = _c("CSBS.4000", 400, "checkpoint item not available")
SCHEDULE_CANNOT_STOP = _c("CSBS.5001", 500, "Scheduel operation status can't be set unable")
SERVER_NOT_FOUND = _c("CSBS.6000", 400, "server do not exist")
SERVER_TERMINATED = _c("CSBS.6001", 400, "The server has stopped.")
TYPE_NOT_PROTECTABLE = _c("CSBS.6003", 400, "Resource (%s) type (%s) is not support protection.")
SERVER_BOUND_TO_POLICY = _c("CSBS.6004", 400, "Server (%s) is already in service.")
SERVER_BUSY = _c("CSBS.6005", 400, "Server (%s) is already in service.")
SERVER_STATUS_NOT_ALLOWED = _c("CSBS.6006", 400, "Server (%s) status (%s) is not allowed to protect.")
NO_VOLUME = _c("CSBS.6007", 400, "No volume attached to the server (%s) for protect.")
SHAREABLE_VOLUME = _c("CSBS.6010", 400, "Volume (%s) attached to server (%s) is shareable volume.")
TYPE_NOT_RESTORABLE = _c("CSBS.6013", 400, "Resource (%s) type (%s) is not support restoration.")
VOLUMES_NOT_IN_TARGET = _c("CSBS.6014", 400, "Volume(s) (%s) not found in target server.")
SERVER_RESTORING = _c("CSBS.6015", 400, "The server is restoring.")
SERVER_TYPE_NOT_RESTORABLE = _c("CSBS.6016", 400, "can not restore server type is not allow")
BACKUPS_NOT_IN_ITEM = _c("CSBS.6017", 400, "Can not find backup(s) (%s) in checkpoint item (%s).")
PARTIAL_RESTORE = _c(
    "CSBS.6018", 400, "Not assign backup(s) (%s) to volume(s), partial restore is not supported."
)
SERVER_TYPE_MISMATCH = _c(
    "CSBS.6019", 500, "The source server (%s) type (%s) is not the same as the target server (%s) type (%s)."
)
NO_VOLUME_FOR_RESTORE = _c("CSBS.6020", 400, "No volume attached to the server (%s) for restore.")
SHAREABLE_VOLUME_RESTORE = _c("CSBS.6021", 400, "Volume (%s) attached to server (%s) is shareable volume.")
DATA_TO_SYSTEM_VOLUME = _c("CSBS.6023", 500, "Can not restore data volume to system volume. server id is (%s).")
TARGET_VOLUME_TOO_SMALL = _c(
    "CSBS.6024", 400, "Target volume (%s) size (%s) small than volume backup (%s) size (%s)."
)
RESTORE_AZ_MISMATCH = _c(
    "CSBS.6025", 400, "The AZ of local checkpoint item (%s) is not support to restore the resource (%s)."
)
AZ_NOT_SUPPORTED = _c("CSBS.6027", 400, "The AZ where the resource (%s) is located does not support backup.")
AUTO_PLAN_EXECUTING = _c("CSBS.6030", 500, "auto plan executing")
MANUAL_COPY_EXECUTING = _c("CSBS.6031", 400, "manual copy executing")
PLAN_HAS_NO_RESOURCE = _c("CSBS.6032", 500, "plan has no resource backup")
DSS_VOLUME = _c("CSBS.6033", 400, "Service type of volume %s(belong to server %s) is dss.")
TASK_NOT_FOUND = _c("CSBS.6040", 404, "task not found")
POD_NOT_SUPPORTED = _c("CSBS.6061", 400, "volume of server in this pod does not support backup")
TAGS_OVER_LIMIT = _c("CSBS.7000", 400, "request tags exceed the max allowed count: %s.")
TAG_NOT_FOUND = _c("CSBS.7001", 404, "The backup tag does not exist.")
IMAGE_STATUS_NOT_ALLOWED = _c("CSBS.8001", 500, "The backup status is not allowed to create image")
REGISTERED_AS_IMAGE = _c("CSBS.8007", 400, "The backup %s has register to image, can't be delete")
STATUS_NOT_QUERYABLE = _c("CSBS.8008", 500, "The backup %s's status is not allowed query")
NO_SYSTEM_DISK_BACKUP = _c(
    "CSBS.8009", 500, "The backup has not system disk backup is not allowed to create image"
)
INVALID_PARAMETER = _c("CSBS.9001", 400, "%s")
QUOTA_EXCEEDED = _c("CSBS.9006", 400, "Quota exceeded for resources: %s")
DUPLICATE_POLICY_NAME = _c("CSBS.9007", 400, "duplicate service name")
ITEM_STATUS_NOT_CREATE_VM = _c("CSBS.9008", 400, "Checkpoint Item Status Not Support Create VM")
SYSTEM_NOT_SUPPORTED = _c("CSBS.9998", 500, "System not support")
INTERNAL_ERROR = _c("CSBS.9999", 500, "%s failed")
#: Not in the appendix as a status, but the reference lists 503 "Service unavailable" on every call: a cloud
#: driver that cannot reach its cloud answers this (code CSBS.9999, status 503).
CLOUD_UNAVAILABLE = _c("CSBS.9999", 503, "%s failed")
#: the identity service (Keystone) cannot judge a token: the same shape, 503
IDENTITY_UNAVAILABLE = _c("CSBS.9999", 503, "%s failed")
#: the server's disk or database is full (ENOSPC, SQLite "database or disk is full", PostgreSQL 53100): 503, the
#: message says which, so an operator reading the client's error knows what to free
STORAGE_FULL = _c("CSBS.9999", 503, "%s failed: %s is full")

# --- not in the appendix: what the API gateway in front of the real service answers (docs/errors.md) ------
AUTH_FAILED = _c("APIGW.0301", 401, "Incorrect IAM authentication information: %s")
FORBIDDEN = _c("APIGW.0302", 403, "The IAM user is not authorized to access the API: %s")
ROUTE_NOT_FOUND = _c("APIGW.0101", 404, "The API does not exist or has not been published in the environment")
METHOD_NOT_ALLOWED = _c("APIGW.0101", 405, "The API does not support the method %s")
REQUEST_TOO_LARGE = _c("APIGW.0201", 413, "Request entity too large: %s")
REQUEST_TIMEOUT = _c("APIGW.0201", 408, "Request timeout: %s")


# --- opencsbs's own (retention locks and legal holds, docs/locks.md): not in the appendix, same body shape ---
BACKUP_LOCKED = _c("CSBS.8101", 409, "Backup (%s) is under %s retention lock (%s) until %s and cannot be deleted.")
BACKUP_HELD = _c("CSBS.8102", 409, "Backup (%s) is under legal hold (%s) and cannot be deleted until it is released.")
LOCK_IMMUTABLE = _c("CSBS.8103", 409,
                    "Retention lock (%s) is a compliance lock past its cooling-off period (ended %s): it cannot be "
                    "removed or weakened.")
GOVERNANCE_BYPASS_DENIED = _c("CSBS.8104", 403,
                              "Retention lock (%s) is a governance lock: removing or weakening it needs rule %s.")
LOCK_NOT_FOUND = _c("CSBS.8105", 404, "Retention lock (%s) is not found.")
HOLD_NOT_FOUND = _c("CSBS.8106", 404, "Legal hold (%s) is not found.")
HOLD_RELEASED = _c("CSBS.8107", 409, "Legal hold (%s) was already released.")

# --- opencsbs's own (verify jobs and restore drills, docs/verify.md) ---------------------------------------
VERIFY_RUN_NOT_FOUND = _c("CSBS.8201", 404, "Verify run (%s) is not found.")
DRILL_NOT_FOUND = _c("CSBS.8202", 404, "Restore drill (%s) is not found.")
#: recorded as a backup's fail code (status ``error``) when a verify job or a drill finds its data damaged
BACKUP_DAMAGED = _c("CSBS.8203", 409, "Backup (%s) data is damaged: %s")
NOTHING_TO_DRILL = _c("CSBS.8204", 409, "No backup to drill: %s")
CHECK_SCHEDULE_NOT_FOUND = _c("CSBS.8205", 404, "Verify or drill schedule (%s) is not found.")
# --- opencsbs's own (cancelling a job, docs/engine.md): not in the appendix, same body shape ---
JOB_ENDED = _c("CSBS.8301", 409, "%s (%s) has already ended (status %s): nothing to cancel.")

def lookup(code: str) -> Code:
    """The catalogue entry for ``"CSBS.xxxx"`` (the first one listed; CSBS.9999 is the 500 one);
    an unknown code gets status 400 and an empty template."""
    for value in globals().values():
        if isinstance(value, Code) and value.code == code:
            return value
    return Code(code, 400, "%s")
