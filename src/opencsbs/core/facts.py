"""The facts the CSBS rules read, as cloud drivers report them.

Drivers (``opencsbs.clouds``) translate their cloud's view into these shapes; the pure rules
(``opencsbs.core.protectable`` and later ``restorable``) read nothing else.

Vocabulary: ``status`` uses Nova's server states (ACTIVE, SHUTOFF, BUILD, ERROR, PAUSED, SUSPENDED, SHELVED,
SHELVED_OFFLOADED, DELETED, SOFT_DELETED, RESIZE, VERIFY_RESIZE, REBOOT, HARD_REBOOT, MIGRATING, RESCUE, ...);
``task_state`` is Nova's ``OS-EXT-STS:task_state`` (None when no task runs). Sizes are in GiB as Cinder gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVER = "OS::Nova::Server"
BAREMETAL_SERVER = "OS::Ironic::BareMetalServer"
VOLUME = "OS::Cinder::Volume"

#: Server types CSBS can protect (reference: querying_the_backup_capability_of_a_resource.rst, resource_type).
SERVER_TYPES = frozenset({SERVER, BAREMETAL_SERVER})


#: Nova's server ``status`` values (compute API reference, "Show Server Details": server status).
NOVA_STATUSES = (
    "ACTIVE", "BUILD", "DELETED", "ERROR", "HARD_REBOOT", "MIGRATING", "PASSWORD", "PAUSED", "REBOOT", "REBUILD",
    "RESCUE", "RESIZE", "REVERT_RESIZE", "SHELVED", "SHELVED_OFFLOADED", "SHUTOFF", "SOFT_DELETED", "SUSPENDED",
    "UNKNOWN", "VERIFY_RESIZE",
)

#: Nova's ``OS-EXT-STS:task_state`` values (``nova/compute/task_states.py``); None means no task runs.
NOVA_TASK_STATES = (
    "scheduling", "block_device_mapping", "networking", "spawning", "image_snapshot", "image_snapshot_pending",
    "image_pending_upload", "image_uploading", "image_backup", "updating_password", "resize_prep",
    "resize_migrating", "resize_migrated", "resize_finish", "resize_reverting", "resize_confirming", "rebooting",
    "reboot_pending", "reboot_started", "rebooting_hard", "reboot_pending_hard", "reboot_started_hard", "pausing",
    "unpausing", "suspending", "resuming", "powering-off", "powering-on", "rescuing", "unrescuing", "rebuilding",
    "rebuild_block_device_mapping", "rebuild_spawning", "migrating", "deleting", "soft-deleting", "restoring",
    "shelving", "shelving_image_pending_upload", "shelving_image_uploading", "shelving_offloading", "unshelving",
)


@dataclass(frozen=True)
class VolumeFacts:
    """One disk attached to a server.

    ``size_gb``: GiB; ``bootable``: the server's system disk; ``shareable``: multi-attach; ``service_type``:
    the storage service behind the volume type (e.g. ``EVS``, ``DSS``), lower-cased compare; ``backend``: the
    storage backend holding it when the cloud says (Cinder's backend name), None when unknown.
    """

    id: str
    name: str = ""
    size_gb: int = 0
    bootable: bool = False
    shareable: bool = False
    volume_type: str | None = None
    service_type: str | None = None
    status: str = "in-use"
    availability_zone: str | None = None
    device: str | None = None
    backend: str | None = None


@dataclass(frozen=True)
class ServerFacts:
    """One server (VM or bare metal) with its attached volumes, as seen by the project that asks."""

    id: str
    project_id: str
    name: str = ""
    resource_type: str = SERVER
    status: str = "ACTIVE"
    task_state: str | None = None
    availability_zone: str | None = None
    volumes: tuple[VolumeFacts, ...] = field(default_factory=tuple)
    flavor: dict | None = None


@dataclass(frozen=True)
class ProtectionState:
    """What opencsbs itself knows about a server: a running backup/restore and its policy binding.

    ``busy_operation``: ``"backup"`` or ``"restore"`` while a job of that kind holds the server;
    ``policy_id``/``policy_name``: the backup policy the server is bound to (one per server).
    """

    busy_operation: str | None = None
    policy_id: str | None = None
    policy_name: str | None = None
