"""uvicorn's HTTP/1.1 protocol (h11) with the CSBS error body for requests refused before the application.

When h11 cannot parse a request (bad chunk framing, a header block over ``h11_max_incomplete_event_size``,
``Content-Length: -1``, a NUL or other forbidden byte in a header), uvicorn answers a ``text/plain`` 400 "Invalid
HTTP request received." and closes the connection. :class:`JsonErrorH11Protocol` answers the same moment with the
documented JSON shape instead: ``{"error_code": "CSBS.9001", "error_msg": "Invalid request parameters: the HTTP
request is malformed (...)"}`` and h11's status hint (400; 431 for a header block too large; 501 for an unsupported
``Transfer-Encoding``), still with ``Connection: close`` (the framing is lost: nothing after it can be trusted).
Pass the class as ``uvicorn.Config(http=JsonErrorH11Protocol)``; docs/errors.md lists what stays outside it.
Source: uvicorn ``protocols/http/h11_impl.py`` (``send_400_response``), h11 ``RemoteProtocolError``.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from opencsbs.core.errors import INVALID_PREFIX

#: the reason phrases of the statuses h11 hints
REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large", 501: "Not Implemented"}


def protocol_error_body(exc: h11.RemoteProtocolError | None) -> tuple[int, bytes]:
    """``(status, JSON body)`` for a request h11 refused (``exc`` None: a plain 400)."""
    status = getattr(exc, "error_status_hint", 400) if exc is not None else 400
    status = status if status in REASONS else 400
    why = {431: "its header block is too large", 501: "its Transfer-Encoding is not supported"}.get(
        status, "bad framing, Content-Length or header bytes")
    msg = f"{INVALID_PREFIX}the HTTP request is malformed ({why})"
    body = {"error_code": "CSBS.9001", "error_msg": msg}
    return status, json.dumps(body).encode()


class JsonErrorH11Protocol(H11Protocol):
    """:class:`uvicorn.protocols.http.h11_impl.H11Protocol` answering protocol errors with the CSBS JSON body."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._protocol_error: h11.RemoteProtocolError | None = None
        next_event = self.conn.next_event

        def recording_next_event():
            try:
                return next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise

        self.conn.next_event = recording_next_event  # the same h11.Connection serves every request of the socket

    def send_400_response(self, msg: str) -> None:
        status, body = protocol_error_body(self._protocol_error)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers,
                                                             reason=REASONS[status].encode())))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # a response had already begun on this cycle: nothing more can be said
            pass
        self.transport.close()
