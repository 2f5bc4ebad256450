"""The backup-capability rules: may this server be backed up, and if not, why.

Source: ``csbs-api-reference/api_description/resource_management/querying_the_backup_capability_of_a_resource.rst``
(the request and the ``check_resp`` shape), ``appendixes/error_codes.rst`` (codes and messages) and the user
guide (only Running/Stopped servers; one policy per server; shared disks and DSS disks cannot be backed up).

The rules are checked in this order; the first that fails gives the verdict:

====  =========  ===========================================================================
step  code       rule
====  =========  ===========================================================================
1     CSBS.6003  the requested ``resource_type`` is not a server type this provider protects
2     CSBS.6000  no such server in the caller's project (never says whether it exists elsewhere)
3     CSBS.6001  the server is DELETED or SOFT_DELETED (terminated)
4     CSBS.6006  status other than ACTIVE/SHUTOFF, or a task in progress (resize, migrate, ...)
5     CSBS.6005  a backup or restore of this server is already running
6     CSBS.6027  the server's availability zone does not offer backup
7     CSBS.6007  no volume attached
8     CSBS.6010  a shareable (multi-attach) volume is attached
9     CSBS.6033  a volume's service type cannot be backed up (e.g. DSS)
10    CSBS.6061  a volume lives on a storage backend whose data opencsbs cannot read (e.g. a Cinder LVM or
                 NFS backend when only Ceph RBD backends are configured); only checked when the driver knows
                 both the backends it can read and the volume's backend
====  =========  ===========================================================================

If all pass and the server is bound to a backup policy, ``result`` stays ``true`` (a manual backup is still
allowed) and ``error_code`` CSBS.6004 with a message naming the policy says it cannot join another policy.
When nothing is to report, ``error_code``/``error_msg`` are omitted, as the real service does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opencsbs.core import codes
from opencsbs.core.facts import SERVER_TYPES, ProtectionState, ServerFacts

#: Nova states in which a server may be backed up (user guide: Running or Stopped).
PROTECTABLE_STATUSES = frozenset({"ACTIVE", "SHUTOFF"})
TERMINATED_STATUSES = frozenset({"DELETED", "SOFT_DELETED"})


@dataclass(frozen=True)
class ProtectableConfig:
    """Operator settings the rules read.

    ``protectable_types``: server types the active driver can back up (subset of ``SERVER_TYPES``);
    ``azs_without_backup``: availability zones where backup is not offered (CSBS.6027);
    ``unprotectable_service_types``: volume service types that cannot be backed up, compared
    case-insensitively (CSBS.6033; default ``{"dss"}``); ``data_backends``: the storage backends whose volumes
    the driver can read (CSBS.6061 for others), None when the driver does not tell.
    """

    protectable_types: frozenset[str] = SERVER_TYPES
    azs_without_backup: frozenset[str] = frozenset()
    unprotectable_service_types: frozenset[str] = frozenset({"dss"})
    data_backends: frozenset[str] | None = None


@dataclass(frozen=True)
class Verdict:
    """One ``check_resp`` entry."""

    resource_id: str
    resource_type: str
    result: bool
    error_code: str | None = None
    error_msg: str | None = None

    def to_wire(self) -> dict:
        """The wire shape; ``error_code``/``error_msg`` only when there is something to report."""
        body: dict = {"resource_id": self.resource_id, "resource_type": self.resource_type, "result": self.result}
        if self.error_code is not None:
            body["error_code"] = self.error_code
            body["error_msg"] = self.error_msg
        return body


def _refuse(resource_id: str, resource_type: str, code: codes.Code, *args: object) -> Verdict:
    return Verdict(resource_id, resource_type, False, code.code, code.format(*args))


def check_protectable(
    resource_id: str,
    resource_type: str,
    server: ServerFacts | None,
    state: ProtectionState,
    config: ProtectableConfig,
) -> Verdict:
    """Decide whether ``server`` (the facts found for ``resource_id``, or None) may be backed up.

    ``server`` must already be scoped to the caller's project: a server of another project is passed as None.
    Returns a :class:`Verdict`; raises nothing.
    """
    if resource_type not in config.protectable_types:
        return _refuse(resource_id, resource_type, codes.TYPE_NOT_PROTECTABLE, resource_id, resource_type)
    if server is None or server.resource_type != resource_type:
        return _refuse(resource_id, resource_type, codes.SERVER_NOT_FOUND)
    status = (server.status or "").upper()
    if status in TERMINATED_STATUSES:
        return _refuse(resource_id, resource_type, codes.SERVER_TERMINATED)
    if status not in PROTECTABLE_STATUSES or server.task_state:
        shown = f"{status}({server.task_state})" if server.task_state else status
        return _refuse(resource_id, resource_type, codes.SERVER_STATUS_NOT_ALLOWED, resource_id, shown)
    if state.busy_operation:
        return _refuse(resource_id, resource_type, codes.SERVER_BUSY, resource_id)
    if server.availability_zone and server.availability_zone in config.azs_without_backup:
        return _refuse(resource_id, resource_type, codes.AZ_NOT_SUPPORTED, resource_id)
    if not server.volumes:
        return _refuse(resource_id, resource_type, codes.NO_VOLUME, resource_id)
    for volume in server.volumes:
        if volume.shareable:
            return _refuse(resource_id, resource_type, codes.SHAREABLE_VOLUME, volume.id, resource_id)
    for volume in server.volumes:
        if volume.service_type and volume.service_type.lower() in config.unprotectable_service_types:
            return _refuse(resource_id, resource_type, codes.DSS_VOLUME, volume.id, resource_id)
    if config.data_backends is not None:
        for volume in server.volumes:
            if volume.backend is not None and volume.backend not in config.data_backends:
                msg = (f"{codes.POD_NOT_SUPPORTED.format()}: volume {volume.id} is on storage backend "
                       f"{volume.backend}, whose data opencsbs cannot read.")
                return Verdict(resource_id, resource_type, False, codes.POD_NOT_SUPPORTED.code, msg)
    if state.policy_id:
        msg = (
            f"{codes.SERVER_BOUND_TO_POLICY.format(resource_id)} "
            f"It is bound to backup policy {state.policy_name} ({state.policy_id}) and cannot join another."
        )
        return Verdict(resource_id, resource_type, True, codes.SERVER_BOUND_TO_POLICY.code, msg)
    return Verdict(resource_id, resource_type, True)


def check_many(
    items: Iterable[tuple[str, str]],
    servers: dict[str, ServerFacts],
    states: dict[str, ProtectionState],
    config: ProtectableConfig,
) -> list[Verdict]:
    """Verdicts for ``(resource_id, resource_type)`` pairs, in the given order.

    ``servers``: the caller's servers by id (missing = not found); ``states``: by id (missing = idle, unbound).
    """
    idle = ProtectionState()
    return [
        check_protectable(rid, rtype, servers.get(rid), states.get(rid, idle), config) for rid, rtype in items
    ]
