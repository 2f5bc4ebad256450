"""The reference docs list everything they claim to: every setting (docs/configuration.md) and every error code
(docs/errors.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from opencsbs import config
from opencsbs.core import codes

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.extend(_keys(field.annotation, f"{prefix}{name}."))
        else:
            out.append(f"{prefix}{name}")
    return out


def test_configuration_lists_every_setting_with_its_env_var():
    text = (DOCS / "configuration.md").read_text()
    missing = [k for k in _keys(config.Settings)
               if f"`{k}`" not in text or "`OPENCSBS_" + k.upper().replace(".", "__") + "`" not in text]
    assert not missing, f"regenerate with scripts/config_doc.py --write: {missing}"


def test_errors_lists_every_code():
    text = (DOCS / "errors.md").read_text()
    missing = [name for name, v in vars(codes).items()
               if isinstance(v, codes.Code) and (f"`{name}`" not in text or v.code not in text)]
    assert not missing, missing
