"""The one exception every layer raises for a client-visible failure.

The HTTP adapter (``opencsbs.api.errors``) turns it into ``{"error_code": ..., "error_msg": ...}`` with the
code's status. Source of the body shape: ``csbs-api-reference/appendixes/error_codes.rst``.
"""

from __future__ import annotations

from opencsbs.core.codes import Code


class CSBSError(Exception):
    """A failure with a CSBS (or gateway) error code.

    ``CSBSError(codes.SERVER_BUSY, server_id)`` fills the code's template; ``message=`` overrides it;
    ``status=`` overrides the code's HTTP status (rarely: the reference pins most).
    """

    def __init__(self, code: Code, *args: object, message: str | None = None, status: int | None = None):
        self.code = code
        self.error_code = code.code
        self.error_msg = message if message is not None else code.format(*args)
        self.status = status if status is not None else code.status
        super().__init__(f"{self.error_code}: {self.error_msg}")

    def body(self) -> dict[str, str]:
        """The wire body: ``{"error_code": "CSBS.xxxx", "error_msg": "..."}``."""
        return {"error_code": self.error_code, "error_msg": self.error_msg}


#: how every CSBS.9001 message begins (the reference's wording)
INVALID_PREFIX = "Invalid request parameters: "


def invalid(message: str, *, status: int | None = None) -> CSBSError:
    """A 400 (or ``status``) CSBS.9001 for a request the reference's parameter rules reject: ``message`` says what
    (``"marker x is not a server of the project"``); the error_msg is ``"Invalid request parameters: " + message``."""
    from opencsbs.core import codes

    return CSBSError(codes.INVALID_PARAMETER, INVALID_PREFIX + message, status=status)


class InvalidField(CSBSError):
    """The CSBS.9001 of :func:`invalid` about one field: ``field`` (``"trigger.properties.pattern"``) and what is
    wrong with its value (``why``: ``"RRULE FREQ must be DAILY or WEEKLY"``) are kept apart, so that a caller that
    reports it otherwise (a setting, not a request field) need not cut them out of the error_msg, which is
    ``"Invalid request parameters: <field> <why>"``."""

    def __init__(self, field: str, why: str, *, status: int | None = None):
        from opencsbs.core import codes

        super().__init__(codes.INVALID_PARAMETER, f"{INVALID_PREFIX}{field} {why}", status=status)
        self.field = field
        self.why = why
