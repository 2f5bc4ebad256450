"""How the CLI shows what it lists: ``-f table`` (default: aligned columns, sizes in human units), ``-f json`` (the
API's JSON bodies, as the API answers them; ``--json`` is a shortcut) and ``-f value`` (the chosen columns,
space-separated, one line per row: for scripts), with ``-c COLUMN`` (repeatable) to choose columns, as the
openstack CLI has them. Units: one set of helpers (:func:`human_bytes`, :func:`human_rate`,
:func:`human_duration`), binary (KiB, MiB, GiB), the units the bank's 4 MiB chunks and the disks' GiB are in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

FORMATS = ("table", "json", "value")


def human_bytes(nbytes: int | float | None) -> str:
    """``1536`` → ``1.5 KiB``; ``0`` → ``0 B``; ``None`` → ``-`` (binary units up to PiB)."""
    if nbytes is None:
        return "-"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def human_rate(bytes_per_second: float | None) -> str:
    """``12_582_912`` → ``12.0 MiB/s``; ``None`` → ``-``."""
    return "-" if bytes_per_second is None else f"{human_bytes(bytes_per_second)}/s"


def human_duration(seconds: float | None) -> str:
    """``42`` → ``42s``, ``200`` → ``3m20s``, ``3720`` → ``1h02m``, ``90000`` → ``1d01h``; ``None`` → ``-``."""
    if seconds is None:
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_time(wire: str | None) -> str:
    """An API timestamp (``2026-12-05T07:52:12.669399``, UTC) as ``2026-12-05 07:52:12``; ``""``/``None`` →
    ``-``."""
    if not wire:
        return "-"
    return wire.replace("T", " ", 1).split(".", 1)[0].removesuffix("Z")


def eta(done_bytes: int, total_bytes: int, elapsed_seconds: float) -> float | None:
    """Seconds left at the average rate so far; ``None`` before anything is done."""
    if done_bytes <= 0 or elapsed_seconds <= 0:
        return None
    return max(0, total_bytes - done_bytes) / (done_bytes / elapsed_seconds)


@dataclass(frozen=True)
class Column:
    """One column: its header (also its ``-c`` name, lower-cased) and how a row (an API body) gives its cell."""

    header: str
    cell: Callable[[dict], Any]


def output_options(func):
    """``-f/--format``, ``--json`` and ``-c/--column`` for a command that ends with :func:`emit`; the command
    receives them as ``fmt`` (``"table"``, ``"json"`` or ``"value"``) and ``columns`` (a tuple)."""
    func = click.option("-c", "--column", "columns", multiple=True, metavar="COLUMN",
                        help="show only this column (repeatable; table and value formats)")(func)
    func = click.option("--json", "as_json", is_flag=True, help="same as -f json")(func)
    func = click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="table, json (the API's JSON) or value (cells only, for scripts)")(func)
    return func


def chosen_format(fmt: str, as_json: bool) -> str:
    return "json" if as_json else fmt


def emit(data: dict | Sequence[dict], columns: Sequence[Column], fmt: str, chosen: Sequence[str] = ()) -> None:
    """Print ``data`` (one API body, or a list of them) in ``fmt``. One body as a table is a FIELD/VALUE table.
    Raises ``click.UsageError`` (exit 2) for a ``-c`` naming no column."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    cols = _pick(columns, chosen)
    single = isinstance(data, dict)
    rows = [data] if single else list(data)
    cells = [[_text(col.cell(row)) for col in cols] for row in rows]
    if fmt == "value":
        for line in cells:
            click.echo(" ".join(line))
        return
    if single:
        table([[col.header, cell] for col, cell in zip(cols, cells[0])], ["FIELD", "VALUE"])
    else:
        table(cells, [col.header for col in cols])


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    """Aligned columns under upper-case headers, two spaces apart (the last column is not padded)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def _pick(columns: Sequence[Column], chosen: Sequence[str]) -> list[Column]:
    if not chosen:
        return list(columns)
    by_name = {c.header.lower().replace(" ", "_"): c for c in columns}
    unknown = [name for name in chosen if name.lower() not in by_name]
    if unknown:
        raise click.UsageError(f"unknown column(s) {', '.join(unknown)}; columns: {', '.join(by_name)}")
    return [by_name[name.lower()] for name in chosen]


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
