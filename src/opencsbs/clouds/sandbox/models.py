"""Tables of the built-in sandbox cloud: its servers, volumes and attachments.

They sit on the product's :class:`~opencsbs.db.base.Base` (same database, same Alembic history: the migrations in
``db/migrations/versions`` create them, and ``db/migrations/env.py`` imports this module so autogenerate sees
them). Every change here needs an Alembic revision. Timestamps are naive UTC; ids are UUID4 strings.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import Base, new_id


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
