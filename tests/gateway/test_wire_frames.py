"""Live events go to client sockets as frames built once (``wire_frames``).

On the gateway's real server (uvicorn) the client socket writes each stored
event's prebuilt frame to its transport; while the transport is paused, and
on a connection that negotiated compression (``cmbtask up`` turns it off;
this test server leaves uvicorn's default on), it goes through ASGI's
``send``, which waits or compresses. Either way the client gets every event
intact and in order, small, medium (16-bit length) and large (64-bit
length) alike.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cmbtask_gateway.store import EventStore, SocketStart
from cmbtask_gateway.wire_frames import DirectFrames, text_frame
from websockets.frames import Frame, Opcode

from tests.support.served import served

TEXTS = ["short", "é" * 200, "x" * 70_000, "after the pause"]


@pytest.mark.parametrize(
    ("compression", "expected"),
    [(None, [True, True, True, False]), ("deflate", [False] * len(TEXTS))],
)
async def test_live_events_are_written_as_prebuilt_frames_unless_paused_or_compressed(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compression: str | None,
    expected: list[bool],
) -> None:
    stores: list[EventStore] = []
    written: list[bool] = []
    original_opening, original_write = EventStore.opening, DirectFrames.write

    async def opening(self: EventStore, session_id: str, after: int, limit: int) -> SocketStart | None:
        stores.append(self)
        return await original_opening(self, session_id, after, limit)

    def write(self: DirectFrames, frame: bytes) -> bool:
        protocol: Any = self._protocol
        paused = len(written) == len(TEXTS) - 1
        if paused and protocol is not None:  # as the transport does when the client's buffer is full
            protocol.pause_writing()
            asyncio.get_running_loop().call_later(0.2, protocol.resume_writing)
        written.append(original_write(self, frame))
        return written[-1]

    monkeypatch.setattr(EventStore, "opening", opening)
    monkeypatch.setattr(DirectFrames, "write", write)
    async with served(database_url, tmp_path / "data", executor="none") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            session = (await http.post("/api/sessions", json={"title": "frames"})).json()["id"]
        ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{session}"
        async with websockets.connect(ws_url, open_timeout=10, max_size=None, compression=compression) as ws:
            assert json.loads(await ws.recv())["type"] == "ws.hello"
            assert json.loads(await ws.recv())["type"] == "ws.replayed"
            opening_frames, written[:] = written[:], []
            for text in TEXTS:
                async with stores[0].write(session) as tx:
                    tx.emit("output", {"stream": "stdout", "text": text})
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in TEXTS]
    assert [frame["data"]["text"] for frame in frames] == TEXTS
    assert [frame["seq"] for frame in frames] == [1, 2, 3, 4]
    # straight to the transport, but not while it was paused, nor compressed
    assert written == expected
    # the hello and the end of the (empty) replay too; compressed, both went through send
    assert opening_frames == ([True, True] if compression is None else [])


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_a_prebuilt_frame_parses_back_to_its_text(size: int) -> None:
    text = "ü" * (size // 2) + "a" * (size % 2)
    frame = text_frame(text)
    reader = _Bytes(frame)
    parsed = _parse(reader)
    assert (parsed.opcode, parsed.fin, bytes(parsed.data).decode()) == (Opcode.TEXT, True, text)
    assert reader.left == 0


async def test_a_send_that_is_not_uvicorns_is_left_to_asgi() -> None:
    async def send(message: Any) -> None:
        return None

    frames = DirectFrames(send)
    assert not frames.available
    assert not frames.write(text_frame("anything"))


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    @property
    def left(self) -> int:
        return len(self._data) - self._at

    def read_exact(self, n: int) -> Any:
        chunk = self._data[self._at : self._at + n]
        self._at += n
        yield from ()
        return chunk


def _parse(reader: _Bytes) -> Frame:
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the frame is incomplete")
