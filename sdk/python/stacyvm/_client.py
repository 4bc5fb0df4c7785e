"""The synchronous client."""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import _ops as ops
from ._errors import ExecTimeoutError, error_from
from ._terminal import Terminal, terminal_url
from ._types import (
    BuildLogFrame,
    EnvironmentBuild,
    EnvironmentBuildEntry,
    EnvironmentSpec,
    Event,
    ExecEvent,
    ExecResult,
    FileInfo,
    Health,
    MetricsSummary,
    PoolStatus,
    Provider,
    Sandbox,
    Snapshot,
    SpawnConfig,
    StreamExit,
    Template,
)

Duration = Union[None, str, int, float]
Mode = Union[None, str, int]
Source = Union[str, "os.PathLike[str]", bytes, IO[bytes], Any]

DEFAULT_URL = "http://127.0.0.1:7423"
USER_AGENT = "stacyvm-python/0.1.0"


def _headers(api_key: Optional[str], user_id: Optional[str], extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    h = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        h["X-API-Key"] = api_key
    if user_id:
        h["X-User-ID"] = user_id
    h.update(extra or {})
    return h


def _raise_for(resp: httpx.Response, body: bytes) -> None:
    if resp.status_code < 400:
        return
    err = error_from(resp.status_code, body, resp.headers, resp.headers.get("x-request-id", ""))
    if isinstance(err, ExecTimeoutError):
        err.result = ExecResult.from_json({**err.body, "timed_out": True, "exit_code": err.body.get("exit_code", -1)})
    raise err


class Client:
    """A StacyVM server, synchronously.

    ``Client(base_url, api_key=...)``; ``timeout`` bounds each request
    (not streams, which last as long as their command). Use it as a context
    manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: Optional[str] = None,
        *,
        user_id: Optional[str] = None,
        timeout: float = 120.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(api_key, user_id, headers),
            timeout=httpx.Timeout(timeout, read=None),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------

    def _send(self, op: ops.Op, **kw: Any) -> httpx.Response:
        if op.json is not ops._NO_BODY:
            kw["json"] = op.json
        resp = self._http.request(op.method, op.path, params=op.params or None, headers=op.headers or None, **kw)
        _raise_for(resp, resp.content)
        return resp

    def _json(self, op: ops.Op) -> Any:
        return self._send(op).json()

    @contextlib.contextmanager
    def _stream(self, op: ops.Op, **kw: Any) -> Iterator[httpx.Response]:
        if op.json is not ops._NO_BODY:
            kw["json"] = op.json
        with self._http.stream(op.method, op.path, params=op.params or None, headers=op.headers or None, **kw) as resp:
            if resp.status_code >= 400:
                _raise_for(resp, resp.read())
            yield resp

    # -- sandboxes ------------------------------------------------------

    def spawn(
        self,
        image: Optional[str] = None,
        *,
        provider: Optional[str] = None,
        memory_mb: Optional[int] = None,
        vcpus: Optional[int] = None,
        ttl: Duration = None,
        template: Optional[str] = None,
        owner_id: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        disk_mb: Optional[int] = None,
        network: Optional[str] = None,
        idle_timeout: Optional[int] = None,
        on_idle: Optional[str] = None,
    ) -> Sandbox:
        """POST /api/v1/sandboxes. ``ttl`` is seconds or a Go duration ("30m").
        ``idle_timeout`` (integer seconds) and ``on_idle`` ("pause" or
        "destroy"): what the server does to the sandbox after that long
        without activity."""
        body = ops.spawn_body(image=image, provider=provider, memory_mb=memory_mb, vcpus=vcpus, ttl=ttl,
                              template=template, owner_id=owner_id, metadata=metadata, disk_mb=disk_mb, network=network,
                              idle_timeout=idle_timeout, on_idle=on_idle)
        return Sandbox.from_json(self._json(ops.Op("POST", f"{ops.API}/sandboxes", json=body)))

    @contextlib.contextmanager
    def sandbox(self, image: Optional[str] = None, **kw: Any) -> Iterator[Sandbox]:
        """Spawn a sandbox for a ``with`` block and destroy it afterwards."""
        s = self.spawn(image, **kw)
        try:
            yield s
        finally:
            with contextlib.suppress(Exception):
                self.destroy(s.id)

    def get(self, sandbox_id: str) -> Sandbox:
        return Sandbox.from_json(self._json(ops.Op("GET", ops.sb(sandbox_id))))

    def list(self, *, owner_id: Optional[str] = None, state: Optional[str] = None,
             provider: Optional[str] = None) -> List[Sandbox]:
        params = ops.compact({"owner_id": owner_id, "state": state, "provider": provider})
        return [Sandbox.from_json(d) for d in self._json(ops.Op("GET", f"{ops.API}/sandboxes", params=params))]

    def extend(self, sandbox_id: str, ttl: Duration) -> Sandbox:
        return Sandbox.from_json(self._json(ops.Op("POST", ops.sb(sandbox_id, "/extend"), json={"ttl": ops.duration(ttl)})))

    def pause(self, sandbox_id: str) -> Sandbox:
        """Freeze a running sandbox (state ``paused``); its memory and files
        stay. Exec, file operations and terminals resume it first (unless the
        server sets ``sandbox.auto_resume: false``). ConflictError (409) in a
        state that cannot pause; UnimplementedError (501) on a provider
        without ``capabilities.pause``."""
        return Sandbox.from_json(self._json(ops.Op("POST", ops.sb(sandbox_id, "/pause"))))

    def resume(self, sandbox_id: str) -> Sandbox:
        """Thaw a paused sandbox (state ``running``); ConflictError (409) when
        it is not paused."""
        return Sandbox.from_json(self._json(ops.Op("POST", ops.sb(sandbox_id, "/resume"))))

    def destroy(self, sandbox_id: str) -> None:
        self._send(ops.Op("DELETE", ops.sb(sandbox_id)))

    def prune(self) -> int:
        """Destroy every expired sandbox now; returns how many."""
        return int(self._json(ops.Op("DELETE", f"{ops.API}/sandboxes"))["pruned"])

    def logs(self, sandbox_id: str, lines: Optional[int] = None) -> List[str]:
        params = {"lines": str(lines)} if lines else {}
        return list(self._json(ops.Op("GET", ops.sb(sandbox_id, "/logs"), params=params)))

    # -- exec -----------------------------------------------------------

    def exec(self, sandbox_id: str, command: str, *, args: Optional[Sequence[str]] = None,
             env: Optional[Mapping[str, str]] = None, workdir: Optional[str] = None,
             timeout: Duration = None) -> ExecResult:
        """Run a command and wait for it. A non-zero exit is a result; a
        timeout raises ExecTimeoutError whose ``result`` has the output."""
        body = ops.exec_body(command, args, env, workdir, timeout, False)
        return ExecResult.from_json(self._json(ops.Op("POST", ops.sb(sandbox_id, "/exec"), json=body)))

    def exec_stream(self, sandbox_id: str, command: str, *, args: Optional[Sequence[str]] = None,
                    env: Optional[Mapping[str, str]] = None, workdir: Optional[str] = None,
                    timeout: Duration = None) -> Iterator[ExecEvent]:
        """Run a command and yield StreamChunk as output arrives, then one
        StreamExit. Leaving the loop early kills the command."""
        body = ops.exec_body(command, args, env, workdir, timeout, True)
        with self._stream(ops.Op("POST", ops.sb(sandbox_id, "/exec"), json=body,
                                 headers={"Accept": "application/x-ndjson"})) as resp:
            for line in resp.iter_lines():
                ev = ops.parse_frame(line)
                if ev is None:
                    continue
                yield ev
                if isinstance(ev, StreamExit):
                    return
        raise ops.incomplete()

    def terminal(self, sandbox_id: str, cols: Optional[int] = None, rows: Optional[int] = None, *,
                 command: Optional[str] = None, workdir: Optional[str] = None) -> Terminal:
        """GET …/terminal: an interactive session on a pseudo-terminal
        (default the sandbox's login shell, 80×24). ``send``/``recv``/
        ``resize``/``signal``; ``wait()`` returns the exit code. Use it in a
        ``with`` block: closing it kills the session's processes."""
        url = terminal_url(self.base_url, sandbox_id, command, workdir, cols, rows)
        return Terminal(url, dict(self._http.headers), self._http.timeout.connect)

    # -- files ----------------------------------------------------------

    def write_file(self, sandbox_id: str, path: str, content: Union[str, bytes], mode: Mode = None) -> None:
        """Write text (str) or bytes through JSON (bounded by the server's
        file limit; use ``upload`` for large files)."""
        self._send(ops.Op("POST", ops.sb(sandbox_id, "/files"), json=ops.write_body(path, content, mode)))

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        return self._send(ops.Op("GET", ops.sb(sandbox_id, "/files"), params={"path": path})).content

    def read_text(self, sandbox_id: str, path: str, encoding: str = "utf-8") -> str:
        return self.read_file(sandbox_id, path).decode(encoding)

    def iter_file(self, sandbox_id: str, path: str, chunk_size: int = ops.CHUNK) -> Iterator[bytes]:
        """Yield a file's bytes as they arrive, without holding it whole."""
        with self._stream(ops.Op("GET", ops.sb(sandbox_id, "/files"), params={"path": path},
                                 headers={"Accept": "application/octet-stream"})) as resp:
            yield from resp.iter_bytes(chunk_size)

    def download(self, sandbox_id: str, path: str, dest: Union[str, "os.PathLike[str]", IO[bytes]]) -> int:
        """Stream a file into ``dest`` (a path or a binary file); returns its size."""
        n = 0
        with contextlib.ExitStack() as stack:
            f: IO[bytes] = stack.enter_context(open(dest, "wb")) if isinstance(dest, (str, os.PathLike)) else dest
            for b in self.iter_file(sandbox_id, path):
                f.write(b)
                n += len(b)
        return n

    def upload(self, sandbox_id: str, path: str, source: Source, mode: Mode = None) -> int:
        """PUT …/files/raw: stream ``source`` (a local path, bytes, a binary
        file or an iterable of bytes) into the sandbox; returns bytes written."""
        params = ops.compact({"path": path, "mode": ops.mode(mode)})
        op = ops.Op("PUT", ops.sb(sandbox_id, "/files/raw"), params=params,
                    headers={"Content-Type": "application/octet-stream"})
        with contextlib.ExitStack() as stack:
            if isinstance(source, (str, os.PathLike)):
                f = stack.enter_context(open(source, "rb"))
                content: Any = ops.read_chunks(f)
            elif isinstance(source, bytes):
                content = source
            elif hasattr(source, "read"):
                content = ops.read_chunks(source)
            else:
                content = source
            size = int(self._send(op, content=content).json()["size"])
        return size

    def delete_file(self, sandbox_id: str, path: str, recursive: bool = False) -> None:
        params = {"path": path}
        if recursive:
            params["recursive"] = "true"
        self._send(ops.Op("DELETE", ops.sb(sandbox_id, "/files"), params=params))

    def list_files(self, sandbox_id: str, path: str = "/workspace") -> List[FileInfo]:
        return [FileInfo.from_json(d) for d in self._json(ops.Op("GET", ops.sb(sandbox_id, "/files/list"), params={"path": path}))]

    def stat(self, sandbox_id: str, path: str) -> FileInfo:
        return FileInfo.from_json(self._json(ops.Op("GET", ops.sb(sandbox_id, "/files/stat"), params={"path": path})))

    def glob(self, sandbox_id: str, pattern: str) -> List[str]:
        return list(self._json(ops.Op("GET", ops.sb(sandbox_id, "/files/glob"), params={"pattern": pattern})))

    def move(self, sandbox_id: str, old_path: str, new_path: str) -> None:
        self._send(ops.Op("POST", ops.sb(sandbox_id, "/files/move"), json={"old_path": old_path, "new_path": new_path}))

    def chmod(self, sandbox_id: str, path: str, mode: Union[str, int]) -> None:
        self._send(ops.Op("POST", ops.sb(sandbox_id, "/files/chmod"), json={"path": path, "mode": ops.mode(mode)}))

    # -- templates ------------------------------------------------------

    def create_template(self, template: Template) -> Template:
        return self._json(ops.Op("POST", f"{ops.API}/templates", json=dict(template)))  # type: ignore[no-any-return]

    def list_templates(self) -> List[Template]:
        return self._json(ops.Op("GET", f"{ops.API}/templates"))  # type: ignore[no-any-return]

    def get_template(self, name: str) -> Template:
        return self._json(ops.Op("GET", f"{ops.API}/templates/{ops.seg(name)}"))  # type: ignore[no-any-return]

    def update_template(self, name: str, template: Template) -> Template:
        return self._json(ops.Op("PUT", f"{ops.API}/templates/{ops.seg(name)}", json=dict(template)))  # type: ignore[no-any-return]

    def delete_template(self, name: str) -> None:
        self._send(ops.Op("DELETE", f"{ops.API}/templates/{ops.seg(name)}"))

    def spawn_template(self, name: str, *, provider: Optional[str] = None, ttl: Duration = None,
                       owner_id: Optional[str] = None, metadata: Optional[Mapping[str, str]] = None) -> Sandbox:
        body = ops.spawn_body(provider=provider, ttl=ttl, owner_id=owner_id, metadata=metadata)
        return Sandbox.from_json(self._json(ops.Op("POST", f"{ops.API}/templates/{ops.seg(name)}/spawn", json=body)))

    # -- environments (docs/environments.md) ----------------------------

    def create_environment_spec(self, name: str, base_image: str, python_packages: Sequence[str] = (), *,
                                apt_packages: Optional[Sequence[str]] = None, python_version: Optional[str] = None,
                                owner_id: Optional[str] = None) -> EnvironmentSpec:
        """An image recipe; BadRequestError for an invalid one, ConflictError
        when the owner has a spec of that name."""
        body = ops.spec_body(name, base_image, python_packages, apt_packages, python_version, owner_id)
        return self._json(ops.Op("POST", f"{ops.ENV}/specs", json=body))  # type: ignore[no-any-return]

    def list_environment_specs(self, owner_id: Optional[str] = None) -> List[EnvironmentSpec]:
        params = ops.compact({"owner_id": owner_id})
        return self._json(ops.Op("GET", f"{ops.ENV}/specs", params=params))  # type: ignore[no-any-return]

    def get_environment_spec(self, spec_id: str) -> EnvironmentSpec:
        return self._json(ops.Op("GET", f"{ops.ENV}/specs/{ops.seg(spec_id)}"))  # type: ignore[no-any-return]

    def create_environment_build(self, spec_id: str, targets: Optional[Sequence[str]] = None) -> EnvironmentBuild:
        """Queue a build of a spec (targets default to ``["local"]``)."""
        body = ops.build_body(spec_id, targets)
        return self._json(ops.Op("POST", f"{ops.ENV}/builds", json=body))  # type: ignore[no-any-return]

    def list_environment_builds(self, owner_id: Optional[str] = None,
                                limit: Optional[int] = None) -> List[EnvironmentBuildEntry]:
        params = ops.compact({"owner_id": owner_id, "limit": str(limit) if limit is not None else None})
        return self._json(ops.Op("GET", f"{ops.ENV}/builds", params=params))  # type: ignore[no-any-return]

    def get_environment_build(self, build_id: str) -> EnvironmentBuild:
        return self._json(ops.Op("GET", f"{ops.ENV}/builds/{ops.seg(build_id)}"))  # type: ignore[no-any-return]

    def cancel_environment_build(self, build_id: str) -> EnvironmentBuild:
        """Cancel a queued or running build; ConflictError once it finished."""
        return self._json(ops.Op("POST", f"{ops.ENV}/builds/{ops.seg(build_id)}/cancel"))  # type: ignore[no-any-return]

    def environment_spawn_config(self, build_id: str) -> SpawnConfig:
        return self._json(ops.Op("GET", f"{ops.ENV}/builds/{ops.seg(build_id)}/spawn-config"))  # type: ignore[no-any-return]

    def follow_environment_build_log(self, build_id: str) -> Iterator[BuildLogFrame]:
        """Yield the build's log as it is written, ending with the frame
        whose ``type`` is "status" (IncompleteStreamError if the stream ends
        without it). Leaving the loop early only stops following."""
        with self._stream(ops.Op("GET", f"{ops.ENV}/builds/{ops.seg(build_id)}/logs",
                                 headers={"Accept": "application/x-ndjson"})) as resp:
            for line in resp.iter_lines():
                f = ops.parse_build_log(line)
                if f is None:
                    continue
                yield f  # type: ignore[misc]
                if f.get("type") == "status":
                    return
        raise ops.build_log_incomplete()

    # -- system ---------------------------------------------------------

    def providers(self) -> List[Provider]:
        return self._json(ops.Op("GET", f"{ops.API}/providers"))  # type: ignore[no-any-return]

    def provider(self, name: str) -> Provider:
        return self._json(ops.Op("GET", f"{ops.API}/providers/{ops.seg(name)}"))  # type: ignore[no-any-return]

    def test_providers(self) -> Dict[str, bool]:
        return self._json(ops.Op("POST", f"{ops.API}/providers/test"))  # type: ignore[no-any-return]

    def snapshots(self) -> List[Snapshot]:
        return self._json(ops.Op("GET", f"{ops.API}/snapshots"))  # type: ignore[no-any-return]

    def pool_status(self) -> PoolStatus:
        return self._json(ops.Op("GET", f"{ops.API}/pool/status"))  # type: ignore[no-any-return]

    def health(self) -> Health:
        return self._json(ops.Op("GET", f"{ops.API}/health"))  # type: ignore[no-any-return]

    def metrics(self) -> MetricsSummary:
        return self._json(ops.Op("GET", f"{ops.API}/metrics"))  # type: ignore[no-any-return]

    def prometheus_metrics(self) -> str:
        return self._send(ops.Op("GET", "/metrics", headers={"Accept": "text/plain"})).text

    def openapi(self) -> str:
        return self._send(ops.Op("GET", f"{ops.API}/openapi.yaml", headers={"Accept": "application/yaml"})).text

    def events(self, last_event_id: Optional[int] = None) -> "EventStream":
        """Subscribe to server-sent events. The subscription is live when
        this returns; iterate it (forever; break or close to stop), best in a
        ``with`` block. ``last_event_id`` first replays the kept events
        after that one."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        return EventStream(self._stream(ops.Op("GET", f"{ops.API}/events", headers=headers)))


class EventStream:
    """An open GET /api/v1/events: an iterator of Event."""

    def __init__(self, cm: Any) -> None:
        self._cm = cm
        resp = cm.__enter__()
        self._lines = resp.iter_lines()
        self._parser = ops.SSEParser()

    @property
    def last_event_id(self) -> str:
        """The ID to resume from after a disconnect."""
        return self._parser.last_id

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        for line in self._lines:
            ev = self._parser.feed(line)
            if ev is not None:
                return ev
        raise StopIteration

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
