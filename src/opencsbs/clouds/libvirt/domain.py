"""Pure translation of a libvirt domain (its XML and its ``state`` stats) into :class:`ServerFacts`.

Sources: libvirt domain XML format (https://libvirt.org/formatdomain.html: ``<disk>``, ``<shareable/>``,
``<boot order>``, ``<os><boot dev>``, ``<metadata>``) and ``virDomainState`` / ``virDomain*Reason``
(https://libvirt.org/html/libvirt-libvirt-domain.html). No libvirt import: the driver hands in plain values.

Mapping to Nova's vocabulary (what ``core.protectable`` reads):

=====================  =========================================
libvirt state/reason    status (task_state)
=====================  =========================================
running, blocked        ACTIVE
running (migrating in)  ACTIVE (migrating)
paused                  PAUSED; reason migration/postcopy -> MIGRATING (migrating);
                        snapshot -> ACTIVE (image_snapshot); save -> ACTIVE (suspending);
                        starting up -> BUILD (spawning)
shutdown (in progress)  ACTIVE (powering-off)
shut off                SHUTOFF
crashed                 ERROR
pmsuspended             SUSPENDED
nostate                 BUILD
=====================  =========================================

The project and availability zone come from the domain's ``<metadata>``: opencsbs's own element
``<opencsbs:server xmlns:opencsbs="https://opencsbs.org/xmlns/libvirt/1" project_id="..." availability_zone="..."/>``
or Nova's ``<nova:owner><nova:project uuid="..."/>``; otherwise the driver's configured defaults.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from opencsbs.core.facts import SERVER, ServerFacts, VolumeFacts

OPENCSBS_NS = "https://opencsbs.org/xmlns/libvirt/1"
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
GIB = 1024**3

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
# virDomainRunningReason
RUNNING_MIGRATED, RUNNING_MIGRATION_CANCELED = 2, 7
# virDomainPausedReason
PAUSED_MIGRATION, PAUSED_SAVE, PAUSED_SNAPSHOT, PAUSED_STARTING_UP, PAUSED_POSTCOPY = 2, 3, 9, 11, 12

#: disk devices that are volumes (cdrom and floppy are not)
_VOLUME_DEVICES = ("disk", "lun")


def server_status(state: int, reason: int) -> tuple[str, str | None]:
    """Nova ``(status, task_state)`` for a libvirt ``(state, reason)`` pair (see the module table)."""
    if state in (RUNNING, BLOCKED):
        return ("ACTIVE", "migrating") if state == RUNNING and reason == RUNNING_MIGRATED else ("ACTIVE", None)
    if state == PAUSED:
        if reason in (PAUSED_MIGRATION, PAUSED_POSTCOPY):
            return "MIGRATING", "migrating"
        if reason == PAUSED_SNAPSHOT:
            return "ACTIVE", "image_snapshot"
        if reason == PAUSED_SAVE:
            return "ACTIVE", "suspending"
        if reason == PAUSED_STARTING_UP:
            return "BUILD", "spawning"
        return "PAUSED", None
    if state == SHUTDOWN:
        return "ACTIVE", "powering-off"
    if state == SHUTOFF:
        return "SHUTOFF", None
    if state == CRASHED:
        return "ERROR", None
    if state == PMSUSPENDED:
        return "SUSPENDED", None
    return "BUILD", None


@dataclass(frozen=True)
class DiskInfo:
    """One ``<disk>`` of the domain XML."""

    target: str
    source: str | None
    serial: str | None
    shareable: bool
    boot_order: int | None
    #: ``<driver type>`` (image format: ``raw``, ``qcow2``...), None when not given
    format: str | None = None
    #: ``<disk type>``: ``file``, ``block``, ``network``, ``volume``...
    source_type: str = "file"
    #: ``<source protocol>`` of a network disk (``rbd``, ``nbd``, ``iscsi``...), None otherwise
    protocol: str | None = None


@dataclass(frozen=True)
class DomainInfo:
    """What the domain XML says that the state stats do not."""

    uuid: str
    name: str
    disks: tuple[DiskInfo, ...]
    os_boot_devs: tuple[str, ...]
    vcpus: int | None
    memory_mib: int | None
    project_id: str | None
    availability_zone: str | None
    #: targets of every ``<disk>`` with a source (cdroms included), as the block stats list them
    sourced_targets: frozenset[str] = frozenset()


def _source(disk: ET.Element) -> str | None:
    src = disk.find("source")
    if src is None:
        return None
    if src.get("pool") and src.get("volume"):
        return f"{src.get('pool')}/{src.get('volume')}"
    for attr in ("file", "dev", "name", "dir"):
        if src.get(attr):
            return src.get(attr)
    return None


def _memory_mib(root: ET.Element) -> int | None:
    mem = root.find("memory")
    if mem is None or not (mem.text or "").strip().isdigit():
        return None
    units = {"b": 1 / 1024**2, "bytes": 1 / 1024**2, "k": 1 / 1024, "kib": 1 / 1024, "m": 1, "mib": 1,
             "g": 1024, "gib": 1024, "kb": 1000 / 1024**2, "mb": 1000**2 / 1024**2, "gb": 1000**3 / 1024**2}
    factor = units.get((mem.get("unit") or "KiB").lower(), 1 / 1024)
    return int(int(mem.text.strip()) * factor)


def parse_domain_xml(xml: str) -> DomainInfo:
    """Parse a domain XML document (``virDomainGetXMLDesc``). Raises ``xml.etree.ElementTree.ParseError``."""
    root = ET.fromstring(xml)
    disks = []
    sourced = set()
    for disk in root.findall("./devices/disk"):
        if _source(disk) is not None and disk.find("target") is not None:
            sourced.add(disk.find("target").get("dev", ""))
        if disk.get("device", "disk") not in _VOLUME_DEVICES:
            continue
        target = disk.find("target")
        boot = disk.find("boot")
        order = boot.get("order") if boot is not None else None
        disks.append(
            DiskInfo(
                target=target.get("dev", "") if target is not None else "",
                source=_source(disk),
                serial=(disk.findtext("serial") or "").strip() or None,
                shareable=disk.find("shareable") is not None,
                boot_order=int(order) if order and order.isdigit() else None,
                format=(disk.find("driver").get("type") if disk.find("driver") is not None else None),
                source_type=disk.get("type", "file"),
                protocol=disk.find("source").get("protocol") if disk.find("source") is not None else None,
            )
        )
    project = az = None
    own = root.find(f"./metadata/{{{OPENCSBS_NS}}}server")
    if own is not None:
        project = own.get("project_id") or None
        az = own.get("availability_zone") or None
    if project is None:
        nova_project = root.find(f"./metadata/{{{NOVA_NS}}}instance/{{{NOVA_NS}}}owner/{{{NOVA_NS}}}project")
        if nova_project is not None:
            project = nova_project.get("uuid") or None
    vcpu = (root.findtext("vcpu") or "").strip()
    return DomainInfo(
        uuid=(root.findtext("uuid") or "").strip(),
        name=(root.findtext("name") or "").strip(),
        disks=tuple(disks),
        os_boot_devs=tuple(b.get("dev", "") for b in root.findall("./os/boot")),
        vcpus=int(vcpu) if vcpu.isdigit() else None,
        memory_mib=_memory_mib(root),
        project_id=project,
        availability_zone=az,
        sourced_targets=frozenset(sourced),
    )


def system_disk(info: DomainInfo) -> str | None:
    """Target of the boot disk: the disk with the lowest per-device ``<boot order>``; else, when the domain boots
    from ``hd`` (``<os><boot dev='hd'/>``, or no boot element at all, libvirt's default), the first disk; else
    (network or cdrom boot only) none."""
    ordered = [d for d in info.disks if d.boot_order is not None]
    if ordered:
        return min(ordered, key=lambda d: d.boot_order).target
    if info.disks and (not info.os_boot_devs or "hd" in info.os_boot_devs):
        return info.disks[0].target
    return None


def volume_id(info: DomainInfo, disk: DiskInfo) -> str:
    """The volume id of one disk: its ``<serial>`` (Nova puts the Cinder volume id there), else its source (path,
    ``pool/volume`` or network name), else ``<uuid>:<target>``. Inventory and data side use this one rule."""
    return disk.serial or disk.source or f"{info.uuid}:{disk.target}"


def block_capacities(stats: dict) -> dict[str, int]:
    """Disk target -> capacity in bytes, from ``block.<n>.name``/``block.<n>.capacity`` stats."""
    out = {}
    for i in range(int(stats.get("block.count", 0))):
        name = stats.get(f"block.{i}.name")
        if name is not None:
            out[name] = int(stats.get(f"block.{i}.capacity", 0) or 0)
    return out


def server_facts(
    info: DomainInfo, stats: dict, default_project: str | None, default_az: str | None,
    known_capacities: dict[str, int] | None = None,
) -> ServerFacts | None:
    """The facts of one domain, or None when no project owns it (no metadata and no configured default).

    ``stats``: the domain's ``virConnectGetAllDomainStats`` record (``state.*``, ``block.*``). Volume ids are the
    disk's ``<serial>`` (Nova puts the Cinder volume id there), else its source (path, ``pool/volume`` or network
    name), else ``<uuid>:<target>``; sizes are rounded up to whole GiB. ``known_capacities``: bytes of disks
    (by target) the stats leave at 0 (network disks of a shut-off domain), from their storage.
    """
    project = info.project_id or default_project
    if not project:
        return None
    status, task = server_status(int(stats.get("state.state", NOSTATE)), int(stats.get("state.reason", 0)))
    caps = block_capacities(stats)
    for target, capacity in (known_capacities or {}).items():
        if not caps.get(target):
            caps[target] = capacity
    az = info.availability_zone or default_az
    boot = system_disk(info)
    volumes = tuple(
        VolumeFacts(
            id=volume_id(info, d),
            name=d.target,
            size_gb=math.ceil(caps.get(d.target, 0) / GIB),
            bootable=d.target == boot,
            shareable=d.shareable,
            status="in-use",
            availability_zone=az,
            device=f"/dev/{d.target}" if d.target else None,
        )
        for d in info.disks
    )
    flavor = {"vcpus": info.vcpus, "ram": info.memory_mib} if info.vcpus or info.memory_mib else None
    return ServerFacts(
        id=info.uuid,
        project_id=project,
        name=info.name,
        resource_type=SERVER,
        status=status,
        task_state=task,
        availability_zone=az,
        volumes=volumes,
        flavor=flavor,
    )
