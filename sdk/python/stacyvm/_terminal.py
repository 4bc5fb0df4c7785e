"""Interactive terminals: GET /api/v1/sandboxes/{id}/terminal over a
WebSocket (Debian's ``python3-websockets``). Binary messages carry the
terminal's bytes both ways; text messages carry JSON control messages
(resize and signal from us, exit and error from the server)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from typing import Any, AsyncIterator, Coroutine, Dict, Iterator, Mapping, Optional, TypeVar, Union
from urllib.parse import urlencode

import websockets.client
import websockets.exceptions
from websockets.typing import Subprotocol

from . import _ops as ops
from ._errors import StacyVMError, error_from, error_from_frame

PROTOCOL = Subprotocol("stacyvm.terminal.v1")

T = TypeVar("T")


def terminal_url(base_url: str, sandbox_id: str, command: Optional[str], workdir: Optional[str],
                 cols: Optional[int], rows: Optional[int]) -> str:
    q = ops.compact({"command": command, "workdir": workdir,
                     "cols": str(cols) if cols is not None else None,
                     "rows": str(rows) if rows is not None else None})
    url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + ops.sb(sandbox_id, "/terminal")
    return url + ("?" + urlencode(q) if q else "")


class AsyncTerminal:
    """An open terminal session. ``recv()`` returns the next bytes the
    terminal printed, and ``b""`` once the program has ended (then
    ``exit_code`` is set). Closing it kills every process of the session."""

    def __init__(self, ws: websockets.client.WebSocketClientProtocol, url: str) -> None:
        self._ws = ws
        self.url = url
        self.exit_code: Optional[int] = None

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], open_timeout: Optional[float]) -> "AsyncTerminal":
        try:
            ws = await websockets.client.connect(
                url, subprotocols=[PROTOCOL], extra_headers=dict(headers), open_timeout=open_timeout,
                max_size=None, compression=None, user_agent_header=headers.get("User-Agent"),
            )
        except websockets.exceptions.InvalidStatusCode as e:
            # Everything that fails up front (unknown sandbox, a provider
            # without terminals, a bad size) is answered before the upgrade;
            # the handshake exposes its status and headers, not its body.
            hdrs = {k.lower(): v for k, v in e.headers.raw_items()}
            raise error_from(e.status_code, b"", hdrs, hdrs.get("x-request-id", "")) from None
        return cls(ws, url)

    async def send(self, data: Union[str, bytes]) -> None:
        """Type into the terminal (str is sent as UTF-8)."""
        await self._ws.send(data.encode() if isinstance(data, str) else bytes(data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._control({"type": "resize", "cols": cols, "rows": rows})

    async def signal(self, name: str) -> None:
        """Signal the foreground job: INT, QUIT, TERM, KILL, HUP, TSTP, CONT,
        USR1, USR2 or WINCH."""
        await self._control({"type": "signal", "signal": name})

    async def _control(self, msg: Dict[str, Any]) -> None:
        await self._ws.send(json.dumps(msg))

    async def recv(self) -> bytes:
        """The next output; b"" when the session is over. A refused control
        message raises its error here (the session goes on); a failed
        session raises its error class."""
        while True:
            try:
                msg = await self._ws.recv()
            except websockets.exceptions.ConnectionClosed as e:
                if self.exit_code is not None or e.rcvd is not None and e.rcvd.code == 1000:
                    return b""
                raise StacyVMError(f"terminal connection closed: {e}", code="UNAVAILABLE") from None
            if isinstance(msg, bytes):
                return msg
            frame = json.loads(msg)
            if frame.get("type") == "exit":
                self.exit_code = int(frame.get("exit_code", -1))
                continue
            if frame.get("type") == "error":
                raise error_from_frame(frame)

    async def read_until(self, pattern: Union[str, bytes], timeout: Optional[float] = None) -> bytes:
        """Read until the output so far contains ``pattern``; returns it all.
        Raises EOFError when the session ends first, TimeoutError after
        ``timeout`` seconds."""
        want = pattern.encode() if isinstance(pattern, str) else pattern
        buf = b""

        async def loop() -> bytes:
            nonlocal buf
            while want not in buf:
                b = await self.recv()
                if not b:
                    raise EOFError(f"terminal ended (exit {self.exit_code}) before {want!r}; got {buf[-200:]!r}")
                buf += b
            return buf

        return await asyncio.wait_for(loop(), timeout)

    async def wait(self, timeout: Optional[float] = None) -> int:
        """Read (and drop) the rest of the output until the program ends;
        returns its exit code."""

        async def loop() -> int:
            while await self.recv():
                pass
            if self.exit_code is None:
                raise StacyVMError("terminal ended without an exit status", code="UNAVAILABLE")
            return self.exit_code

        return await asyncio.wait_for(loop(), timeout)

    async def close(self) -> None:
        """End the session (its processes are killed)."""
        await self._ws.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        while b := await self.recv():
            yield b

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Terminal:
    """The synchronous face of AsyncTerminal: the socket lives on an event
    loop in a thread of its own, so it keeps answering pings and reading
    while the caller does other things."""

    def __init__(self, url: str, headers: Mapping[str, str], open_timeout: Optional[float]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stacyvm-terminal", daemon=True)
        self._thread.start()
        try:
            self._t = self._run(AsyncTerminal.open(url, headers, open_timeout))
        except BaseException:
            self._stop()
            raise
        self.url = url

    def _run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def _stop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def exit_code(self) -> Optional[int]:
        return self._t.exit_code

    def send(self, data: Union[str, bytes]) -> None:
        self._run(self._t.send(data))

    def resize(self, cols: int, rows: int) -> None:
        self._run(self._t.resize(cols, rows))

    def signal(self, name: str) -> None:
        self._run(self._t.signal(name))

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next output; b"" when the session is over."""
        return self._run(self._t.recv(), timeout)

    def read_until(self, pattern: Union[str, bytes], timeout: Optional[float] = None) -> bytes:
        return self._run(self._t.read_until(pattern, timeout))

    def wait(self, timeout: Optional[float] = None) -> int:
        return self._run(self._t.wait(timeout))

    def close(self) -> None:
        if not self._loop.is_closed():
            try:
                self._run(self._t.close())
            finally:
                self._stop()

    def __iter__(self) -> Iterator[bytes]:
        while b := self.recv():
            yield b

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
