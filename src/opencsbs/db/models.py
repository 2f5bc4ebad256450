"""Tables of opencsbs. Every change here needs an Alembic revision in ``db/migrations/versions``.

All timestamps are naive UTC. Ids are UUID4 strings. JSON columns hold wire-shaped dicts/lists.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, BigInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import Base, new_id


class LocalToken(Base):
    """A token of the embedded local auth mode; only its SHA-256 is stored."""

    __tablename__ = "local_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


# --- CSBS state ---------------------------------------------------------------------------------------------


class ResourceLock(Base):
    """At most one backup or restore job per server: the row exists while the job runs (CSBS.6005)."""

    __tablename__ = "resource_locks"

    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    operation: Mapped[str] = mapped_column(String(16))  # "backup" | "restore"
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    acquired_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Policy(Base):
    """A backup policy (``csbs-api-reference/api_description/backup_policy_management``).

    ``status``: ``suspended`` until an update changes whether its scheduled operation is enabled, then
    ``enabled``/``disabled`` (docs/policies.md). ``parameters`` is the wire ``policy_param`` dict. Names are
    unique per project (CSBS.9007).
    """

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_policies_project_id_name"),
                      Index("ix_policies_project_id_created_at_id", "project_id", "created_at", "id"),
                      Index("ix_policies_created_at_id", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    provider_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default="suspended")
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    resources: Mapped[list[PolicyResource]] = relationship(
        back_populates="policy", cascade="all, delete-orphan", order_by="PolicyResource.position"
    )
    scheduled_operations: Mapped[list[ScheduledOperation]] = relationship(
        back_populates="policy", cascade="all, delete-orphan", order_by="ScheduledOperation.created_at"
    )


class PolicyResource(Base):
    """A server bound to a policy. ``resource_id`` is unique: one policy per server (CSBS.6004)."""

    __tablename__ = "policy_resources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), default="")
    extra_info: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)

    policy: Mapped[Policy] = relationship(back_populates="resources")


class ScheduledOperation(Base):
    """A policy's scheduled operation with its time trigger.

    ``operation_definition`` holds the retention fields as the client gave them (ints/bool/str);
    ``pattern`` the trigger pattern exactly as sent; ``start_time`` the trigger's start (naive UTC, whole
    seconds). The scheduler owns ``next_run_at`` (the next slot to fire; None while disabled) and
    ``last_slot_at``: a scheduler claims a slot by moving ``next_run_at`` with a compare-and-swap.
    ``retention_due_at`` is when retention should next be applied.
    """

    __tablename__ = "scheduled_operations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    operation_type: Mapped[str] = mapped_column(String(16), default="backup")
    operation_definition: Mapped[dict] = mapped_column(JSON, default=dict)
    trigger_id: Mapped[str] = mapped_column(String(36), default=new_id)
    trigger_name: Mapped[str] = mapped_column(String(255), default="default")
    trigger_type: Mapped[str] = mapped_column(String(16), default="time")
    pattern: Mapped[str] = mapped_column(Text)
    start_time: Mapped[datetime] = mapped_column(DateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    last_slot_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    retention_due_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    policy: Mapped[Policy] = relationship(back_populates="scheduled_operations")


class PolicyRun(Base):
    """One execution of a policy: manual (``POST .../checkpoints``) or a scheduler slot.

    ``(operation_id, slot_at)`` is unique: a slot fires once however many schedulers run. ``status``:
    ``running`` while its backups are being created, then ``done`` or ``error`` (``message`` says why);
    ``checkpoint_ids`` lists the checkpoints it started.
    """

    __tablename__ = "policy_runs"
    __table_args__ = (UniqueConstraint("operation_id", "slot_at", name="uq_policy_runs_operation_id_slot_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    operation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    slot_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    auto_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="running")
    checkpoint_ids: Mapped[list] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Tag(Base):
    """A tag of a backup policy (``resource_kind`` ``policy``) or a backup (``backup``: a checkpoint item).

    Keys are unique per resource (tag_management/*.rst).
    """

    __tablename__ = "tags"
    __table_args__ = (
        UniqueConstraint("resource_kind", "resource_id", "key", name="uq_tags_resource_kind_resource_id_key"),
        Index("ix_tags_project_id_resource_kind", "project_id", "resource_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    resource_kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --- backups, restores and the jobs that make them ----------------------------------------------------------


class Checkpoint(Base):
    """A backup record (``checkpoint``): one per protect call or policy run, holding checkpoint_items.

    ``status``: protecting | available | error | deleting | deleted (reference lifecycle; older rows: waiting_delete).
    ``plan``: the ``protection_plan`` shown on the wire (id, name, resources).
    """

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    provider_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default="protecting")
    policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    plan: Mapped[dict] = mapped_column(JSON, default=dict)
    extra_info: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    items: Mapped[list[CheckpointItem]] = relationship(back_populates="checkpoint", order_by="CheckpointItem.created_at")


class CheckpointItem(Base):
    """One server's backup within a checkpoint (``checkpoint_item``), made of one :class:`VolumeBackup` per disk.

    Sizes in bytes; ``progress`` 0-100; ``average_speed`` KB/s; ``protected_at`` when the data became
    available. ``fail_*`` describe the last failed operation (backup, restore or delete).
    """

    __tablename__ = "checkpoint_items"
    #: the list's keyset walks (``created_at, id`` after the equality filter) and the counts (``status`` and
    #: ``project_id`` after them, so a count reads the index only): docs/performance.md "The cost curve"
    __table_args__ = (
        Index("ix_checkpoint_items_project_id_created_at_id", "project_id", "created_at", "id", "status"),
        Index("ix_checkpoint_items_policy_id_created_at_id", "policy_id", "created_at", "id", "status",
              "project_id"),
        Index("ix_checkpoint_items_resource_id_created_at_id", "resource_id", "created_at", "id", "status",
              "project_id"),
        Index("ix_checkpoint_items_created_at_id", "created_at", "id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), index=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="protecting", index=True)
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_name: Mapped[str] = mapped_column(String(255), default="")
    resource_az: Mapped[str | None] = mapped_column(String(64), nullable=True)
    policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    auto_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    image_type: Mapped[str] = mapped_column(String(16), default="backup")
    tags: Mapped[list] = mapped_column(JSON, default=list)
    extra_info: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    backup_data: Mapped[dict] = mapped_column(JSON, default=dict)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    average_speed: Mapped[int] = mapped_column(Integer, default=0)
    source_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    fail_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    fail_reason: Mapped[str] = mapped_column(Text, default="")
    fail_op: Mapped[str] = mapped_column(String(16), default="")
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    protected_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    checkpoint: Mapped[Checkpoint] = relationship(back_populates="items")
    volume_backups: Mapped[list[VolumeBackup]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="VolumeBackup.position"
    )
    #: copies to replica banks (read only here; ``service/replication.py`` writes them)
    copies: Mapped[list[BackupCopy]] = relationship(
        primaryjoin="CheckpointItem.id == foreign(BackupCopy.checkpoint_item_id)", viewonly=True,
        order_by="BackupCopy.created_at", lazy="selectin")


class CheckpointItemTally(Base):
    """A change to a project's checkpoint_items in one status: ``n`` items (+k or -k) and ``stored_bytes`` bytes.
    Summed over a ``(project_id, status)``, the rows give how many items of that project have that status and what
    they store, so a count or a quota check reads a few rows instead of one index entry per backup
    (docs/performance.md "The cost curve").

    Rows are written by database triggers on ``checkpoint_items`` (insert, delete, and an update that changes
    ``status``, ``project_id`` or ``stored_bytes``: migration 0011), never by the application, so no code path can
    forget one; housekeeping folds a project's rows into one per status (:func:`opencsbs.db.tallies.compact`).
    """

    __tablename__ = "checkpoint_item_tallies"
    __table_args__ = (Index("ix_checkpoint_item_tallies_project_id_status", "project_id", "status"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)


class VolumeBackup(Base):
    """One disk of a checkpoint_item: its snapshot and the bank index holding its data (``index_name``).

    ``status``: protecting | available | error | deleted. Sizes in bytes; ``source_volume_size`` in GiB.
    ``change_token``: the driver's token of the snapshot, base of the next incremental backup of the disk.
    """

    __tablename__ = "volume_backups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    checkpoint_item_id: Mapped[str] = mapped_column(ForeignKey("checkpoint_items.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="protecting")
    source_volume_id: Mapped[str] = mapped_column(String(64), index=True)
    source_volume_name: Mapped[str] = mapped_column(String(255), default="")
    source_volume_size: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    change_token: Mapped[str | None] = mapped_column(String(255), nullable=True)
    index_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    base_index: Mapped[str | None] = mapped_column(String(255), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    read_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(default=0.0)
    average_speed: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    item: Mapped[CheckpointItem] = relationship(back_populates="volume_backups")


class Restore(Base):
    """A restoration task (``POST /v1/{project_id}/restores``). ``status``: in_progress | success | error."""

    __tablename__ = "restores"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    provider_id: Mapped[str] = mapped_column(String(36))
    checkpoint_id: Mapped[str] = mapped_column(String(36), index=True)
    checkpoint_item_id: Mapped[str] = mapped_column(String(36), index=True)
    target_server_id: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    restore_target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    resources_status: Mapped[dict] = mapped_column(JSON, default=dict)
    resources_reason: Mapped[dict] = mapped_column(JSON, default=dict)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Job(Base):
    """A durable unit of engine work (backup, restore, delete), run step by step by a worker.

    ``status``: pending | running | done | failed. ``step``: the next step to run; ``state``: what earlier steps
    produced (e.g. the snapshot), so another worker can resume after a crash. A worker owns a job while
    ``lease_until`` is in the future; ``claim`` counts claims and makes claiming and heartbeats compare-and-swap.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    resource_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    step: Mapped[str] = mapped_column(String(32), default="start")
    state: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: "cancelled by <user>" once someone asked to cancel the job (engine/jobs.py ``request_cancel``)
    cancel_requested: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: placement: what a worker must offer to run this job (``["driver:libvirt", "libvirt:kvm-2", "zone:nova"]``,
    #: core/placement.py); None or [] = any worker
    needs: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class WorkerSeen(Base):
    """A running worker (``opencsbs serve``'s or ``opencsbs worker``'s, not the CLI's ``--wait`` one): its name,
    when it last wrote its heartbeat (``seen_at``, UTC), its ``host``, the ``capabilities`` it serves (placement,
    core/placement.py), the job it runs (``current_job``) and when it started; the row goes when it stops. The CLI
    warns when no row is recent (engine/worker.py ``workers_seen``); ``opencsbs workers`` lists them."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    host: Mapped[str] = mapped_column(String(255), default="", server_default="")
    capabilities: Mapped[list | None] = mapped_column(JSON, nullable=True)
    current_job: Mapped[str | None] = mapped_column(String(36), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


# --- retention locks, legal holds and their audit trail (core/locks.py, docs/locks.md) ----------------------


class RetentionLock(Base):
    """A retention lock on a project's backups (``policy_id`` None) or on one policy's.

    ``mode``: governance | compliance; ``min_retention_days`` keeps each covered backup that long after its
    creation; ``max_retention_days`` optional; ``cooling_off_hours`` after ``created_at`` a compliance lock
    becomes immutable. A removed lock's row is deleted (the audit table keeps its history).
    """

    __tablename__ = "retention_locks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    mode: Mapped[str] = mapped_column(String(16))
    min_retention_days: Mapped[int] = mapped_column(Integer)
    max_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cooling_off_hours: Mapped[int] = mapped_column(Integer, default=72)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class LegalHold(Base):
    """A legal hold: keeps the project's backups it selects until released. Criteria (all given must match):
    ``item_ids`` (JSON list of checkpoint_item ids), ``tag_key``/``tag_value``, ``policy_id``,
    ``created_after``/``created_before`` (backup creation time)."""

    __tablename__ = "legal_holds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
    item_ids: Mapped[list | None] = mapped_column(JSON, nullable=True)
    tag_key: Mapped[str | None] = mapped_column(String(36), nullable=True)
    tag_value: Mapped[str | None] = mapped_column(String(43), nullable=True)
    policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_after: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_before: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    released_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LockAudit(Base):
    """One act on a lock or hold: ``action`` lock.create | lock.update | lock.remove | hold.create |
    hold.release; ``bypass`` true when a governance lock was weakened with ``csbs:locks:bypass_governance``;
    ``actor`` the user id, ``actor_project`` the token's project ('' for a system-scoped token); ``detail`` the
    lock/hold before and after (wire shapes)."""

    __tablename__ = "lock_audit"
    __table_args__ = (Index("ix_lock_audit_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(64), default="")
    actor_project: Mapped[str] = mapped_column(String(64), default="")
    bypass: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


# --- copies of backups to second banks (engine/copy.py, docs/replication.md) --------------------------------


class BackupCopy(Base):
    """One copy of a checkpoint_item to a replica bank (``replica``: its name in ``settings.replicas``).

    ``status``: waiting | copying | available | error, then deleting | deleted once the replica's retention
    removes it (``deleted_at``; the row stays as history). ``sent_bytes``: stored bytes sent to the replica;
    ``size_bytes``: the copied volumes' size; ``job_id``: the ``copy`` job that makes it."""

    __tablename__ = "backup_copies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    checkpoint_item_id: Mapped[str] = mapped_column(String(36), index=True)
    replica: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    rule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sent_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sent_chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReplicationRule(Base):
    """Copy every backup of ``policy_id`` to the replica ``replica`` once it is available, and keep the copies
    on the replica by the rule's own retention: ``max_backups`` newest copies per server, ``retention_duration_days``
    after a copy's arrival (None or -1/0: no limit; docs/replication.md)."""

    __tablename__ = "replication_rules"
    __table_args__ = (UniqueConstraint("policy_id", "replica", name="uq_replication_rules_policy_replica"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    policy_id: Mapped[str] = mapped_column(String(36), index=True)
    replica: Mapped[str] = mapped_column(String(64))
    max_backups: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retention_duration_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)



class VerifyRun(Base):
    """A verify job: re-read and re-hash every chunk of the selected backups (docs/verify.md).

    ``selector``: ``{"checkpoint_item_ids": [...] | None, "policy_id": str | None}`` (none: every available backup
    of the project); ``outdated_after_days``: skip backups verified (ok) within that many days (None: verify all).
    ``status``: pending | running | ok | damaged | error. ``verified`` / ``skipped``: checkpoint_item ids;
    ``affected``: ids of every backup of the project that needs a damaged or missing chunk (selected or not);
    ``problems``: ``[{"chunk", "problem" (damaged|missing), "reason"}]``. ``schedule_id`` set for a scheduled run.
    """

    __tablename__ = "verify_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    selector: Mapped[dict] = mapped_column(JSON, default=dict)
    outdated_after_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    verified: Mapped[list] = mapped_column(JSON, default=list)
    skipped: Mapped[list] = mapped_column(JSON, default=list)
    affected: Mapped[list] = mapped_column(JSON, default=list)
    problems: Mapped[list] = mapped_column(JSON, default=list)
    chunks_checked: Mapped[int] = mapped_column(Integer, default=0)
    bytes_checked: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    schedule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Drill(Base):
    """A restore drill: one backup restored onto scratch space, every byte checked against its recorded hashes,
    timed (``rto_seconds``), the scratch copy deleted (docs/verify.md).

    ``choice``: latest | random | id (how ``checkpoint_item_id`` was chosen); ``status``: pending | running |
    passed | failed (the backup did not restore byte-exact) | error (the drill itself could not run)."""

    __tablename__ = "drills"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    checkpoint_item_id: Mapped[str] = mapped_column(String(36), index=True)
    resource_id: Mapped[str] = mapped_column(String(64), default="")
    resource_name: Mapped[str] = mapped_column(String(255), default="")
    choice: Mapped[str] = mapped_column(String(16), default="id")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    rto_seconds: Mapped[float | None] = mapped_column(nullable=True)
    bytes_restored: Mapped[int] = mapped_column(BigInteger, default=0)
    volumes: Mapped[list] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    schedule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class BackupCheck(Base):
    """What verify jobs and drills last found of one backup (checkpoint_item): one row per backup.

    ``verify_result``: ok | damaged (a chunk it needs is damaged or missing); ``verify_detail``: the chunks;
    ``drill_result``: passed | failed; ``last_good_drill_at`` / ``drill_rto_seconds``: the last passed drill."""

    __tablename__ = "backup_checks"

    checkpoint_item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    resource_id: Mapped[str] = mapped_column(String(64), default="")
    last_verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    verify_result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verify_detail: Mapped[list] = mapped_column(JSON, default=list)
    verify_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_drill_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    drill_result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    drill_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_good_drill_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    drill_rto_seconds: Mapped[float | None] = mapped_column(nullable=True)


class CheckSchedule(Base):
    """A project's schedule of verify jobs or drills: ``kind`` verify | drill, ``pattern`` an RRULE as a policy's
    (``core.schedule``), ``parameters`` the run's (verify: ``policy_id``, ``outdated_after_days``; drill:
    ``choice``, ``server_id``). The housekeeping tick starts a run when ``next_run_at`` has passed."""

    __tablename__ = "check_schedules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    pattern: Mapped[str] = mapped_column(Text)
    start_time: Mapped[datetime] = mapped_column(DateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
