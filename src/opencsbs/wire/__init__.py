"""Request bodies shared by the two adapters, the HTTP API (``api/``) and the ``opencsbs`` command (``cli/``):
pydantic models of what a client sends, validated before a use case of ``service/`` gets them. Imports nothing of
opencsbs but ``core``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """Base of request models: strict JSON types (no silent coercion of ``1`` into ``"1"``)."""

    model_config = ConfigDict(strict=True, extra="ignore")
