"""Tables of opencsbs. Every change here needs an Alembic revision in ``db/migrations/versions``.

All timestamps are naive UTC. Ids are UUID4 strings. JSON columns hold wire-shaped dicts/lists.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, BigInteger, String, Text, UniqueConstraint
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


# --- the sandbox cloud --------------------------------------------------------------------------------------


class SandboxServer(Base):
    """A server of the built-in sandbox cloud (VM or bare metal), Nova vocabulary for status/task_state."""

    __tablename__ = "sandbox_servers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    resource_type: Mapped[str] = mapped_column(String(64), default="OS::Nova::Server")
    status: Mapped[str] = mapped_column(String(32), default="ACTIVE")
    task_state: Mapped[str | None] = mapped_column(String(64), nullable=True)
    availability_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    flavor: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    attachments: Mapped[list[SandboxAttachment]] = relationship(
        back_populates="server", cascade="all, delete-orphan", order_by="SandboxAttachment.device"
    )


class SandboxVolume(Base):
    """A volume of the sandbox cloud; its bytes live in a sparse file ``<data_dir>/sandbox/volumes/<id>.img``."""

    __tablename__ = "sandbox_volumes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    size_gb: Mapped[int] = mapped_column(Integer)
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    shareable: Mapped[bool] = mapped_column(Boolean, default=False)
    volume_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    service_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="available")
    availability_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    attachments: Mapped[list[SandboxAttachment]] = relationship(
        back_populates="volume", cascade="all, delete-orphan"
    )


class SandboxAttachment(Base):
    """A volume attached to a server at ``device`` (a shareable volume may have several)."""

    __tablename__ = "sandbox_attachments"
    __table_args__ = (UniqueConstraint("server_id", "device"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    server_id: Mapped[str] = mapped_column(ForeignKey("sandbox_servers.id", ondelete="CASCADE"), index=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("sandbox_volumes.id", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(64))

    server: Mapped[SandboxServer] = relationship(back_populates="attachments")
    volume: Mapped[SandboxVolume] = relationship(back_populates="attachments")


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
    """A backup policy (``csbs-api-reference/api_description/backup_policy_management``)."""

    __tablename__ = "policies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
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
