"""A stored event's WebSocket frame, built once and written to every socket.

Through ASGI, each delivery of an event encodes its text, builds and
serialises a frame and joins the connection's pending writes, per client
(the largest single share of the gateway's samples in the profile; built once
instead, a burst costs 10-15 % less CPU per delivery, ``bench/README.md``). A server
frame is unmasked and, with per-message compression off (``cli``), the same
bytes for every client, so the hub's publisher builds it once
(``text_frame``) and each client socket writes it to its transport
(``DirectFrames``), as ``websockets.broadcast`` does.

Only where the server is uvicorn's ``websockets-sansio`` protocol with no
extension negotiated, and only while that connection is open and writable;
anything else (a paused transport, a close under way, another server, a
test client) goes through ASGI's ``send`` as before, which waits or refuses
as it should. Nothing about the connection's state changes with a data
frame, so the protocol object stays right.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

__all__ = ["DirectFrames", "text_frame"]


def text_frame(text: str) -> bytes:
    """The unmasked, uncompressed, unfragmented text frame carrying ``text``."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class DirectFrames:
    """Writes prebuilt frames to the transport under one ASGI ``send``."""

    __slots__ = ("_protocol",)

    def __init__(self, send: Any) -> None:
        protocol = getattr(send, "__self__", None)
        usable = isinstance(protocol, WebSocketsSansIOProtocol) and not protocol.conn.extensions
        self._protocol: WebSocketsSansIOProtocol | None = protocol if usable else None

    @property
    def available(self) -> bool:
        return self._protocol is not None

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` if the connection takes it now; False: use ``send``."""
        protocol = self._protocol
        if (
            protocol is None
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
            or protocol.conn.expect_continuation_frame
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(frame)
        return True
