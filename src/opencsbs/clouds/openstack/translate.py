"""Pure translation of Nova servers, Cinder volumes and Ironic nodes into :class:`ServerFacts`.

Inputs are openstacksdk resources (``openstack.compute.v2.server.Server``, ``openstack.block_storage.v3.volume
.Volume``, ``openstack.baremetal.v1.node.Node``, ``openstack.baremetal.v1.volume_target.VolumeTarget``) or
anything with the same attributes; nothing here talks to a cloud.

Sources: Nova API reference (server ``status``, ``OS-EXT-STS:task_state``/``power_state``,
``OS-EXT-AZ:availability_zone``, ``os-extended-volumes:volumes_attached``, ``OS-EXT-SRV-ATTR:root_device_name``),
Cinder API reference (volume ``bootable``, ``multiattach``, ``volume_type``, ``attachments``,
``os-vol-host-attr:host``), Ironic API reference
(node ``provision_state``, ``power_state``, ``target_power_state``, ``maintenance``, ``instance_uuid``, ``owner``,
``lessee``; volume targets ``boot_index``).

Rules of translation:

* Server status is Nova's ``status``; a server Nova calls ACTIVE whose ``power_state`` is CRASHED (6) is ERROR.
* The system disk is the attached volume whose attachment device is the server's ``root_device_name`` (visible to
  admins); without it, Cinder's ``bootable`` flag. ``multiattach`` volumes are shareable. A volume's service type
  is looked up by its volume type name in the operator's ``volume_service_types`` map (case-insensitive keys).
* A volume Nova lists but Cinder did not return (another project's volume seen through a pass-through token) is
  reported with ``status="unknown"`` and no flags.
* A bare-metal server is a Nova server (or a standalone Ironic instance) whose id is an Ironic node's
  ``instance_uuid``. Its state comes from the node (table in :func:`baremetal_status`) unless Nova already reports
  a state that is not protectable; its volumes are Nova's attached volumes, else the node's volume targets
  (``boot_index`` 0 is the system disk). Its project is Nova's, else the node's ``lessee``, ``owner`` or
  ``instance_info.project_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opencsbs.core.facts import BAREMETAL_SERVER, SERVER, ServerFacts, VolumeFacts

#: Nova power_state values (nova.compute.power_state)
POWER_CRASHED = 6


def _lower_keys(mapping: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (mapping or {}).items()}


def volume_facts(
    volume: Any,
    server_id: str,
    root_device: str | None,
    service_types: Mapping[str, str] | None,
) -> VolumeFacts:
    """Facts of a Cinder volume as attached to ``server_id``."""
    device = None
    for att in getattr(volume, "attachments", None) or []:
        if att.get("server_id") == server_id:
            device = att.get("device")
            break
    if root_device and device:
        bootable = device == root_device
    else:
        bootable = bool(getattr(volume, "is_bootable", False))
    vtype = getattr(volume, "volume_type", None)
    service_type = _lower_keys(service_types).get(vtype.lower()) if vtype else None
    return VolumeFacts(
        id=volume.id,
        name=getattr(volume, "name", None) or "",
        size_gb=int(getattr(volume, "size", 0) or 0),
        bootable=bootable,
        shareable=bool(getattr(volume, "is_multiattach", False)),
        volume_type=vtype,
        service_type=service_type,
        status=getattr(volume, "status", None) or "unknown",
        availability_zone=getattr(volume, "availability_zone", None),
        device=device,
        backend=cinder_backend(getattr(volume, "host", None)),
    )


def cinder_backend(host: str | None) -> str | None:
    """The backend name of a Cinder volume's ``os-vol-host-attr:host`` (``host@backend#pool``; admins see it),
    None when absent or without ``@``."""
    if not host or "@" not in host:
        return None
    return host.split("@", 1)[1].split("#", 1)[0] or None


def _unknown_volume(volume_id: str) -> VolumeFacts:
    return VolumeFacts(id=volume_id, status="unknown")


def _flavor(server: Any) -> dict | None:
    flavor = getattr(server, "flavor", None)
    if flavor is None:
        return None
    data = flavor.to_dict() if hasattr(flavor, "to_dict") else dict(flavor)
    keep = {k: data.get(k) for k in ("name", "original_name", "vcpus", "ram", "disk") if data.get(k) is not None}
    if "original_name" in keep and "name" not in keep:
        keep["name"] = keep.pop("original_name")
    keep.pop("original_name", None)
    return keep or None


def server_status(server: Any) -> tuple[str, str | None]:
    """Nova ``(status, task_state)``, with CRASHED power state reported as ERROR."""
    status = (getattr(server, "status", None) or "UNKNOWN").upper()
    if status == "ACTIVE" and getattr(server, "power_state", None) == POWER_CRASHED:
        status = "ERROR"
    return status, getattr(server, "task_state", None) or None


def nova_server_facts(
    server: Any, volumes_by_id: Mapping[str, Any], service_types: Mapping[str, str] | None
) -> ServerFacts:
    """Facts of a Nova server; ``volumes_by_id``: the Cinder volumes visible to the asker, by id."""
    root = getattr(server, "root_device_name", None)
    attached = [a.get("id") for a in (getattr(server, "attached_volumes", None) or []) if a.get("id")]
    volumes = tuple(
        volume_facts(volumes_by_id[vid], server.id, root, service_types) if vid in volumes_by_id
        else _unknown_volume(vid)
        for vid in attached
    )
    status, task = server_status(server)
    return ServerFacts(
        id=server.id,
        project_id=getattr(server, "project_id", None) or "",
        name=getattr(server, "name", None) or "",
        resource_type=SERVER,
        status=status,
        task_state=task,
        availability_zone=getattr(server, "availability_zone", None),
        volumes=volumes,
        flavor=_flavor(server),
    )


#: Ironic provision states that mean "no instance any more" (the node was torn down or never deployed)
_GONE_PROVISION = frozenset({"available", "manageable", "enroll", "verifying", "cleaning", "clean wait",
                             "clean failed", "inspecting", "inspect wait", "inspect failed"})
_BUILD_PROVISION = {"deploying": "spawning", "wait call-back": "spawning", "deploy wait": "spawning"}
_TASK_PROVISION = {"deleting": "deleting", "rebuilding": "rebuilding", "rescuing": "rescuing",
                   "unrescuing": "unrescuing", "servicing": "servicing", "service wait": "servicing",
                   "adopting": "adopting"}
_ERROR_PROVISION = frozenset({"deploy failed", "error", "rescue failed", "unrescue failed", "service failed",
                              "adopt failed"})


def baremetal_status(node: Any) -> tuple[str, str | None]:
    """``(status, task_state)`` of the instance on an Ironic node.

    ================================  ======================================
    node                              status (task_state)
    ================================  ======================================
    maintenance                       ERROR (maintenance)
    deploying, wait call-back         BUILD (spawning)
    deleting, rebuilding, rescuing..  ACTIVE (deleting / rebuilding / ...)
    deploy failed, error, ...         ERROR
    rescue                            RESCUE
    available, manageable, cleaning.  DELETED (the instance is gone)
    active + target_power_state       ACTIVE (powering-on/-off, rebooting)
    active + power on / power off     ACTIVE / SHUTOFF
    active + no power state           UNKNOWN
    ================================  ======================================
    """
    provision = (getattr(node, "provision_state", None) or "").lower()
    if getattr(node, "is_maintenance", False):
        return "ERROR", "maintenance"
    if provision in _BUILD_PROVISION:
        return "BUILD", _BUILD_PROVISION[provision]
    if provision in _TASK_PROVISION:
        return "ACTIVE", _TASK_PROVISION[provision]
    if provision in _ERROR_PROVISION:
        return "ERROR", None
    if provision == "rescue":
        return "RESCUE", None
    if provision in _GONE_PROVISION:
        return "DELETED", None
    target = (getattr(node, "target_power_state", None) or "").lower()
    if target:
        task = {"power on": "powering-on", "power off": "powering-off", "rebooting": "rebooting",
                "soft power off": "powering-off", "soft rebooting": "rebooting"}.get(target, target)
        return "ACTIVE", task
    power = (getattr(node, "power_state", None) or "").lower()
    if power == "power on":
        return "ACTIVE", None
    if power == "power off":
        return "SHUTOFF", None
    return "UNKNOWN", None


def _node_project(node: Any) -> str | None:
    info = getattr(node, "instance_info", None) or {}
    return getattr(node, "lessee", None) or getattr(node, "owner", None) or info.get("project_id")


def baremetal_server_facts(
    node: Any,
    nova_facts: ServerFacts | None,
    targets: Iterable[Any],
    volumes_by_id: Mapping[str, Any],
    service_types: Mapping[str, str] | None,
) -> ServerFacts:
    """Facts of the instance on an Ironic ``node``; ``nova_facts``: the same instance as Nova reports it (or None
    for standalone Ironic); ``targets``: the node's volume targets."""
    status, task = baremetal_status(node)
    if nova_facts is not None and (nova_facts.status not in ("ACTIVE", "SHUTOFF") or nova_facts.task_state):
        status, task = nova_facts.status, nova_facts.task_state
    if nova_facts is not None and nova_facts.volumes:
        volumes = nova_facts.volumes
    else:
        vols = []
        for target in sorted(targets, key=lambda t: (getattr(t, "boot_index", None) is None,
                                                     getattr(t, "boot_index", 0) or 0)):
            vid = getattr(target, "volume_id", None)
            if not vid:
                continue
            facts = (volume_facts(volumes_by_id[vid], node.instance_id, None, service_types)
                     if vid in volumes_by_id else _unknown_volume(vid))
            boot = getattr(target, "boot_index", None) == 0
            vols.append(VolumeFacts(**{**facts.__dict__, "bootable": boot}))
        volumes = tuple(vols)
    info = getattr(node, "instance_info", None) or {}
    return ServerFacts(
        id=node.instance_id,
        project_id=(nova_facts.project_id if nova_facts else None) or _node_project(node) or "",
        name=(nova_facts.name if nova_facts else None) or info.get("display_name") or getattr(node, "name", "") or "",
        resource_type=BAREMETAL_SERVER,
        status=status,
        task_state=task,
        availability_zone=(nova_facts.availability_zone if nova_facts else None) or info.get("availability_zone"),
        volumes=volumes,
        flavor=nova_facts.flavor if nova_facts else None,
    )
