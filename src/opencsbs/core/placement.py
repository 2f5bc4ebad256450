"""Placement: which worker may run which job (pure rules, no I/O).

A job carries **needs** and a worker declares **capabilities**, both ``kind:value`` strings:

| string | a job needs it when | a worker offers it when |
|---|---|---|
| ``driver:<name>`` | its server is one of that cloud driver's | it runs that cloud driver |
| ``sandbox:<host>`` | its sandbox server's volume files are on ``host`` | it is a sandbox worker on ``host`` |
| ``libvirt:<host>`` | its domain runs on KVM host ``host`` | it is a libvirt worker of that host |
| ``rbd:<backend>`` | a disk lives in that Ceph RBD backend (OpenStack) | it has that backend's Ceph settings |
| ``zone:<az>`` | its server is in availability zone ``az`` | it serves that zone (``zone:*``: every zone) |
| ``host:<host>`` | (an operator's own need) | always, with its host's name |

A worker may run a job when every need is among its capabilities; a capability ``kind:*`` offers every value of
``kind``. A job with no needs (deletes, verify runs, copies: the bank only) runs on any worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: the value of a capability that offers every value of its kind (``zone:*``)
ANY = "*"


def need(kind: str, value: str) -> str:
    """The need or capability ``kind:value``."""
    return f"{kind}:{value}"


def offers(capabilities: Iterable[str], wanted: str) -> bool:
    """Whether ``capabilities`` hold the need ``wanted`` (exactly, or through a ``kind:*`` capability)."""
    kind = wanted.split(":", 1)[0]
    return any(c == wanted or c == f"{kind}:{ANY}" for c in capabilities)


def missing(needs: Iterable[str] | None, capabilities: Iterable[str] | None) -> list[str]:
    """The needs of ``needs`` that ``capabilities`` do not offer, in order. ``capabilities`` None: a worker that
    told nothing (an older version's row): it is taken to serve anything."""
    if capabilities is None:
        return []
    caps = list(capabilities)
    return [n for n in needs or () if not offers(caps, n)]


def can_run(needs: Iterable[str] | None, capabilities: Iterable[str] | None) -> bool:
    """Whether a worker with ``capabilities`` may run a job with ``needs``."""
    return not missing(needs, capabilities)


def split(capabilities: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(exact, kinds)``: the exact capabilities and the kinds offered whole (``zone:*`` -> ``zone``), for the
    claim query's SQL."""
    exact, kinds = [], []
    for c in dict.fromkeys(capabilities):
        kind, _, value = c.partition(":")
        (kinds if value == ANY else exact).append(kind if value == ANY else c)
    return exact, kinds


def unservable(needs: Sequence[str] | None, live: Sequence[tuple[str, Sequence[str] | None]],
               silent_after: float) -> str | None:
    """Why no live worker can run a job with ``needs``, in one line, or None when one can.

    ``live``: ``(worker name, capabilities)`` of the workers seen within ``silent_after`` seconds. The line names
    the needs no live worker offers (the closest worker's), e.g. ``"no live worker can serve libvirt:kvm-2 (live
    workers: 2, none offers it); it runs as soon as one does"``.
    """
    if not live:
        return (f"no live worker (none seen in the last {silent_after:g} s); it runs as soon as one that serves "
                f"{', '.join(needs) if needs else 'it'} starts")
    gaps = [missing(needs, caps) for _name, caps in live]
    if any(not gap for gap in gaps):
        return None
    best = min(gaps, key=len)
    return (f"no live worker can serve {', '.join(best)} (live workers: {len(live)}, none offers "
            f"{'it' if len(best) == 1 else 'them all'}); it runs as soon as one does")
