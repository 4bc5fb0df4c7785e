"""Requests, built once for the sync and the async client."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from ._errors import IncompleteStreamError, error_from_frame
from ._types import Event, ExecEvent, StreamChunk, StreamExit

API = "/api/v1"
CHUNK = 64 * 1024

_NO_BODY: Any = object()


@dataclass
class Op:
    method: str
    path: str
    params: Dict[str, str] = field(default_factory=dict)
    json: Any = _NO_BODY
    headers: Dict[str, str] = field(default_factory=dict)


def seg(s: str) -> str:
    if not s:
        raise ValueError("an ID or name is required")
    return quote(s, safe="")


def sb(id: str, suffix: str = "") -> str:
    return f"{API}/sandboxes/{seg(id)}{suffix}"


def duration(v: Union[None, str, int, float]) -> Optional[str]:
    """A Go duration string from seconds (int/float) or a string as is."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{int(v * 1000)}ms" if v != int(v) else f"{int(v)}s"
    return str(v)


def mode(v: Union[None, str, int]) -> Optional[str]:
    if v is None:
        return None
    return f"{v:04o}" if isinstance(v, int) else v


def compact(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def spawn_body(**kw: Any) -> Dict[str, Any]:
    kw["ttl"] = duration(kw.get("ttl"))
    return compact(kw)


ENV = f"{API}/environments"


def spec_body(name: str, base_image: str, python_packages: Sequence[str], apt_packages: Optional[Sequence[str]],
              python_version: Optional[str], owner_id: Optional[str]) -> Dict[str, Any]:
    return compact({"name": name, "base_image": base_image, "python_packages": list(python_packages),
                    "apt_packages": list(apt_packages) if apt_packages is not None else None,
                    "python_version": python_version, "owner_id": owner_id})


def build_body(spec_id: str, targets: Optional[Sequence[str]]) -> Dict[str, Any]:
    return compact({"spec_id": spec_id, "targets": list(targets) if targets is not None else None})


def parse_build_log(line: str) -> Optional[Dict[str, Any]]:
    """One NDJSON line of a followed build log (None for a blank line)."""
    if not line.strip():
        return None
    return dict(json.loads(line))


def build_log_incomplete() -> IncompleteStreamError:
    return IncompleteStreamError("build log ended without the build's status")


def exec_body(
    command: str,
    args: Optional[Sequence[str]],
    env: Optional[Mapping[str, str]],
    workdir: Optional[str],
    timeout: Union[None, str, int, float],
    stream: bool,
) -> Dict[str, Any]:
    if not command:
        raise ValueError("command is required")
    body = compact(
        {"command": command, "args": list(args) if args is not None else None, "env": dict(env) if env else None,
         "workdir": workdir, "timeout": duration(timeout)}
    )
    if stream:
        body["stream"] = True
    return body


def write_body(path: str, content: Union[str, bytes], mode_: Union[None, str, int]) -> Dict[str, Any]:
    if isinstance(content, bytes):
        body: Dict[str, Any] = {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}
    else:
        body = {"path": path, "content": content}
    if mode_ is not None:
        body["mode"] = mode(mode_)
    return body


def parse_frame(line: str) -> Optional[ExecEvent]:
    """One NDJSON line of an exec stream; raises on an error frame."""
    if not line.strip():
        return None
    f = json.loads(line)
    if "stream" in f:
        return StreamChunk(stream=f["stream"], data=f.get("data", ""))
    if f.get("type") == "exit":
        return StreamExit(exit_code=f.get("exit_code", -1), timed_out=bool(f.get("timed_out")), duration=f.get("duration", ""))
    if f.get("type") == "error":
        raise error_from_frame(f)
    return None


def incomplete() -> IncompleteStreamError:
    return IncompleteStreamError("exec stream ended without an exit status")


class SSEParser:
    """Turns the lines of a text/event-stream into Events."""

    def __init__(self) -> None:
        self.data: List[str] = []
        self.id = ""
        self.event = ""
        self.last_id = ""

    def feed(self, line: str) -> Optional[Event]:
        line = line.rstrip("\r\n")
        if line == "":
            if not self.data:
                self.event = ""
                return None
            raw = json.loads("\n".join(self.data))
            self.data = []
            if self.id:
                self.last_id = self.id
            ev = Event(
                id=int(raw.get("id", self.id or 0)),
                type=raw.get("type", self.event),
                time=raw.get("time", ""),
                sandbox_id=raw.get("sandbox_id", ""),
                data=dict(raw.get("data") or {}),
            )
            self.event = ""
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        elif name == "event":
            self.event = value
        return None


def read_chunks(f: Any) -> Iterable[bytes]:
    while True:
        b = f.read(CHUNK)
        if not b:
            return
        yield b


async def aread_chunks(f: Any) -> Any:
    """read_chunks for the async client (httpx wants an async iterable).
    The reads are local and blocking, as sync file reads are everywhere."""
    for b in read_chunks(f):
        yield b


def aiter_bytes(content: Any) -> Any:
    """An async iterable of the bytes of a sync iterable."""

    async def gen() -> Any:
        for b in content:
            yield b

    return gen()
