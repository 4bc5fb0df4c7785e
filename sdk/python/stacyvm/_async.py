"""The asynchronous client: the same methods as Client, awaited."""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import _ops as ops
from ._client import DEFAULT_URL, Duration, Mode, Source, _headers, _raise_for
from ._terminal import AsyncTerminal, terminal_url
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


class AsyncClient:
    """A StacyVM server, asynchronously (asyncio, on httpx.AsyncClient).

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
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(api_key, user_id, headers),
            timeout=httpx.Timeout(timeout, read=None),
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------

    async def _send(self, op: ops.Op, **kw: Any) -> httpx.Response:
        if op.json is not ops._NO_BODY:
            kw["json"] = op.json
        resp = await self._http.request(op.method, op.path, params=op.params or None, headers=op.headers or None, **kw)
        _raise_for(resp, resp.content)
        return resp

    async def _json(self, op: ops.Op) -> Any:
        return (await self._send(op)).json()

    @contextlib.asynccontextmanager
    async def _stream(self, op: ops.Op, **kw: Any) -> AsyncIterator[httpx.Response]:
        if op.json is not ops._NO_BODY:
            kw["json"] = op.json
        async with self._http.stream(op.method, op.path, params=op.params or None, headers=op.headers or None, **kw) as resp:
            if resp.status_code >= 400:
                _raise_for(resp, await resp.aread())
            yield resp

    # -- sandboxes ------------------------------------------------------

    async def spawn(
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
        return Sandbox.from_json(await self._json(ops.Op("POST", f"{ops.API}/sandboxes", json=body)))

    @contextlib.asynccontextmanager
    async def sandbox(self, image: Optional[str] = None, **kw: Any) -> AsyncIterator[Sandbox]:
        """Spawn a sandbox for a ``with`` block and destroy it afterwards."""
        s = await self.spawn(image, **kw)
        try:
            yield s
        finally:
            with contextlib.suppress(Exception):
                await self.destroy(s.id)

    async def get(self, sandbox_id: str) -> Sandbox:
        return Sandbox.from_json(await self._json(ops.Op("GET", ops.sb(sandbox_id))))

    async def list(self, *, owner_id: Optional[str] = None, state: Optional[str] = None,
             provider: Optional[str] = None) -> List[Sandbox]:
        params = ops.compact({"owner_id": owner_id, "state": state, "provider": provider})
        return [Sandbox.from_json(d) for d in await self._json(ops.Op("GET", f"{ops.API}/sandboxes", params=params))]

    async def extend(self, sandbox_id: str, ttl: Duration) -> Sandbox:
        return Sandbox.from_json(await self._json(ops.Op("POST", ops.sb(sandbox_id, "/extend"), json={"ttl": ops.duration(ttl)})))

    async def pause(self, sandbox_id: str) -> Sandbox:
        """Freeze a running sandbox (state ``paused``); its memory and files
        stay. Exec, file operations and terminals resume it first (unless the
        server sets ``sandbox.auto_resume: false``). ConflictError (409) in a
        state that cannot pause; UnimplementedError (501) on a provider
        without ``capabilities.pause``."""
        return Sandbox.from_json(await self._json(ops.Op("POST", ops.sb(sandbox_id, "/pause"))))

    async def resume(self, sandbox_id: str) -> Sandbox:
        """Thaw a paused sandbox (state ``running``); ConflictError (409) when
        it is not paused."""
        return Sandbox.from_json(await self._json(ops.Op("POST", ops.sb(sandbox_id, "/resume"))))

    async def destroy(self, sandbox_id: str) -> None:
        await self._send(ops.Op("DELETE", ops.sb(sandbox_id)))

    async def prune(self) -> int:
        """Destroy every expired sandbox now; returns how many."""
        return int((await self._json(ops.Op("DELETE", f"{ops.API}/sandboxes")))["pruned"])

    async def logs(self, sandbox_id: str, lines: Optional[int] = None) -> List[str]:
        params = {"lines": str(lines)} if lines else {}
        return list(await self._json(ops.Op("GET", ops.sb(sandbox_id, "/logs"), params=params)))

    # -- exec -----------------------------------------------------------

    async def exec(self, sandbox_id: str, command: str, *, args: Optional[Sequence[str]] = None,
             env: Optional[Mapping[str, str]] = None, workdir: Optional[str] = None,
             timeout: Duration = None) -> ExecResult:
        """Run a command and wait for it. A non-zero exit is a result; a
        timeout raises ExecTimeoutError whose ``result`` has the output."""
        body = ops.exec_body(command, args, env, workdir, timeout, False)
        return ExecResult.from_json(await self._json(ops.Op("POST", ops.sb(sandbox_id, "/exec"), json=body)))

    async def exec_stream(self, sandbox_id: str, command: str, *, args: Optional[Sequence[str]] = None,
                    env: Optional[Mapping[str, str]] = None, workdir: Optional[str] = None,
                    timeout: Duration = None) -> AsyncIterator[ExecEvent]:
        """Run a command and yield StreamChunk as output arrives, then one
        StreamExit. Leaving the loop early kills the command."""
        body = ops.exec_body(command, args, env, workdir, timeout, True)
        async with self._stream(ops.Op("POST", ops.sb(sandbox_id, "/exec"), json=body,
                                 headers={"Accept": "application/x-ndjson"})) as resp:
            async for line in resp.aiter_lines():
                ev = ops.parse_frame(line)
                if ev is None:
                    continue
                yield ev
                if isinstance(ev, StreamExit):
                    return
        raise ops.incomplete()

    async def terminal(self, sandbox_id: str, cols: Optional[int] = None, rows: Optional[int] = None, *,
                       command: Optional[str] = None, workdir: Optional[str] = None) -> AsyncTerminal:
        """GET …/terminal: Client.terminal, awaited (``async with``)."""
        url = terminal_url(self.base_url, sandbox_id, command, workdir, cols, rows)
        return await AsyncTerminal.open(url, dict(self._http.headers), self._http.timeout.connect)

    # -- files ----------------------------------------------------------

    async def write_file(self, sandbox_id: str, path: str, content: Union[str, bytes], mode: Mode = None) -> None:
        """Write text (str) or bytes through JSON (bounded by the server's
        file limit; use ``upload`` for large files)."""
        await self._send(ops.Op("POST", ops.sb(sandbox_id, "/files"), json=ops.write_body(path, content, mode)))

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        return (await self._send(ops.Op("GET", ops.sb(sandbox_id, "/files"), params={"path": path}))).content

    async def read_text(self, sandbox_id: str, path: str, encoding: str = "utf-8") -> str:
        return (await self.read_file(sandbox_id, path)).decode(encoding)

    async def iter_file(self, sandbox_id: str, path: str, chunk_size: int = ops.CHUNK) -> AsyncIterator[bytes]:
        """Yield a file's bytes as they arrive, without holding it whole."""
        async with self._stream(ops.Op("GET", ops.sb(sandbox_id, "/files"), params={"path": path},
                                 headers={"Accept": "application/octet-stream"})) as resp:
            async for b in resp.aiter_bytes(chunk_size):
                yield b

    async def download(self, sandbox_id: str, path: str, dest: Union[str, "os.PathLike[str]", IO[bytes]]) -> int:
        """Stream a file into ``dest`` (a path or a binary file); returns its size."""
        n = 0
        with contextlib.ExitStack() as stack:
            f: IO[bytes] = stack.enter_context(open(dest, "wb")) if isinstance(dest, (str, os.PathLike)) else dest
            async for b in self.iter_file(sandbox_id, path):
                f.write(b)
                n += len(b)
        return n

    async def upload(self, sandbox_id: str, path: str, source: Source, mode: Mode = None) -> int:
        """PUT …/files/raw: stream ``source`` (a local path, bytes, a binary
        file, or a sync or async iterable of bytes) into the sandbox; returns bytes written."""
        params = ops.compact({"path": path, "mode": ops.mode(mode)})
        op = ops.Op("PUT", ops.sb(sandbox_id, "/files/raw"), params=params,
                    headers={"Content-Type": "application/octet-stream"})
        with contextlib.ExitStack() as stack:
            if isinstance(source, (str, os.PathLike)):
                f = stack.enter_context(open(source, "rb"))
                content: Any = ops.aread_chunks(f)
            elif isinstance(source, bytes):
                content = source
            elif hasattr(source, "read"):
                content = ops.aread_chunks(source)
            elif hasattr(source, "__aiter__"):
                content = source
            else:
                content = ops.aiter_bytes(source)
            size = int((await self._send(op, content=content)).json()["size"])
        return size

    async def delete_file(self, sandbox_id: str, path: str, recursive: bool = False) -> None:
        params = {"path": path}
        if recursive:
            params["recursive"] = "true"
        await self._send(ops.Op("DELETE", ops.sb(sandbox_id, "/files"), params=params))

    async def list_files(self, sandbox_id: str, path: str = "/workspace") -> List[FileInfo]:
        return [FileInfo.from_json(d) for d in await self._json(ops.Op("GET", ops.sb(sandbox_id, "/files/list"), params={"path": path}))]

    async def stat(self, sandbox_id: str, path: str) -> FileInfo:
        return FileInfo.from_json(await self._json(ops.Op("GET", ops.sb(sandbox_id, "/files/stat"), params={"path": path})))

    async def glob(self, sandbox_id: str, pattern: str) -> List[str]:
        return list(await self._json(ops.Op("GET", ops.sb(sandbox_id, "/files/glob"), params={"pattern": pattern})))

    async def move(self, sandbox_id: str, old_path: str, new_path: str) -> None:
        await self._send(ops.Op("POST", ops.sb(sandbox_id, "/files/move"), json={"old_path": old_path, "new_path": new_path}))

    async def chmod(self, sandbox_id: str, path: str, mode: Union[str, int]) -> None:
        await self._send(ops.Op("POST", ops.sb(sandbox_id, "/files/chmod"), json={"path": path, "mode": ops.mode(mode)}))

    # -- templates ------------------------------------------------------

    async def create_template(self, template: Template) -> Template:
        return await self._json(ops.Op("POST", f"{ops.API}/templates", json=dict(template)))  # type: ignore[no-any-return]

    async def list_templates(self) -> List[Template]:
        return await self._json(ops.Op("GET", f"{ops.API}/templates"))  # type: ignore[no-any-return]

    async def get_template(self, name: str) -> Template:
        return await self._json(ops.Op("GET", f"{ops.API}/templates/{ops.seg(name)}"))  # type: ignore[no-any-return]

    async def update_template(self, name: str, template: Template) -> Template:
        return await self._json(ops.Op("PUT", f"{ops.API}/templates/{ops.seg(name)}", json=dict(template)))  # type: ignore[no-any-return]

    async def delete_template(self, name: str) -> None:
        await self._send(ops.Op("DELETE", f"{ops.API}/templates/{ops.seg(name)}"))

    async def spawn_template(self, name: str, *, provider: Optional[str] = None, ttl: Duration = None,
                       owner_id: Optional[str] = None, metadata: Optional[Mapping[str, str]] = None) -> Sandbox:
        body = ops.spawn_body(provider=provider, ttl=ttl, owner_id=owner_id, metadata=metadata)
        return Sandbox.from_json(await self._json(ops.Op("POST", f"{ops.API}/templates/{ops.seg(name)}/spawn", json=body)))

    # -- environments (docs/environments.md) ----------------------------

    async def create_environment_spec(self, name: str, base_image: str, python_packages: Sequence[str] = (), *,
                                apt_packages: Optional[Sequence[str]] = None, python_version: Optional[str] = None,
                                owner_id: Optional[str] = None) -> EnvironmentSpec:
        """An image recipe; BadRequestError for an invalid one, ConflictError
        when the owner has a spec of that name."""
        body = ops.spec_body(name, base_image, python_packages, apt_packages, python_version, owner_id)
        return await self._json(ops.Op("POST", f"{ops.ENV}/specs", json=body))  # type: ignore[no-any-return]

    async def list_environment_specs(self, owner_id: Optional[str] = None) -> List[EnvironmentSpec]:
        params = ops.compact({"owner_id": owner_id})
        return await self._json(ops.Op("GET", f"{ops.ENV}/specs", params=params))  # type: ignore[no-any-return]

    async def get_environment_spec(self, spec_id: str) -> EnvironmentSpec:
        return await self._json(ops.Op("GET", f"{ops.ENV}/specs/{ops.seg(spec_id)}"))  # type: ignore[no-any-return]

    async def create_environment_build(self, spec_id: str, targets: Optional[Sequence[str]] = None) -> EnvironmentBuild:
        """Queue a build of a spec (targets default to ``["local"]``)."""
        body = ops.build_body(spec_id, targets)
        return await self._json(ops.Op("POST", f"{ops.ENV}/builds", json=body))  # type: ignore[no-any-return]

    async def list_environment_builds(self, owner_id: Optional[str] = None,
                                limit: Optional[int] = None) -> List[EnvironmentBuildEntry]:
        params = ops.compact({"owner_id": owner_id, "limit": str(limit) if limit is not None else None})
        return await self._json(ops.Op("GET", f"{ops.ENV}/builds", params=params))  # type: ignore[no-any-return]

    async def get_environment_build(self, build_id: str) -> EnvironmentBuild:
        return await self._json(ops.Op("GET", f"{ops.ENV}/builds/{ops.seg(build_id)}"))  # type: ignore[no-any-return]

    async def cancel_environment_build(self, build_id: str) -> EnvironmentBuild:
        """Cancel a queued or running build; ConflictError once it finished."""
        return await self._json(ops.Op("POST", f"{ops.ENV}/builds/{ops.seg(build_id)}/cancel"))  # type: ignore[no-any-return]

    async def environment_spawn_config(self, build_id: str) -> SpawnConfig:
        return await self._json(ops.Op("GET", f"{ops.ENV}/builds/{ops.seg(build_id)}/spawn-config"))  # type: ignore[no-any-return]

    async def follow_environment_build_log(self, build_id: str) -> AsyncIterator[BuildLogFrame]:
        """Yield the build's log as it is written, ending with the frame
        whose ``type`` is "status" (IncompleteStreamError if the stream ends
        without it). Leaving the loop early only stops following."""
        async with self._stream(ops.Op("GET", f"{ops.ENV}/builds/{ops.seg(build_id)}/logs",
                                 headers={"Accept": "application/x-ndjson"})) as resp:
            async for line in resp.aiter_lines():
                f = ops.parse_build_log(line)
                if f is None:
                    continue
                yield f  # type: ignore[misc]
                if f.get("type") == "status":
                    return
        raise ops.build_log_incomplete()

    # -- system ---------------------------------------------------------

    async def providers(self) -> List[Provider]:
        return await self._json(ops.Op("GET", f"{ops.API}/providers"))  # type: ignore[no-any-return]

    async def provider(self, name: str) -> Provider:
        return await self._json(ops.Op("GET", f"{ops.API}/providers/{ops.seg(name)}"))  # type: ignore[no-any-return]

    async def test_providers(self) -> Dict[str, bool]:
        return await self._json(ops.Op("POST", f"{ops.API}/providers/test"))  # type: ignore[no-any-return]

    async def snapshots(self) -> List[Snapshot]:
        return await self._json(ops.Op("GET", f"{ops.API}/snapshots"))  # type: ignore[no-any-return]

    async def pool_status(self) -> PoolStatus:
        return await self._json(ops.Op("GET", f"{ops.API}/pool/status"))  # type: ignore[no-any-return]

    async def health(self) -> Health:
        return await self._json(ops.Op("GET", f"{ops.API}/health"))  # type: ignore[no-any-return]

    async def metrics(self) -> MetricsSummary:
        return await self._json(ops.Op("GET", f"{ops.API}/metrics"))  # type: ignore[no-any-return]

    async def prometheus_metrics(self) -> str:
        return (await self._send(ops.Op("GET", "/metrics", headers={"Accept": "text/plain"}))).text

    async def openapi(self) -> str:
        return (await self._send(ops.Op("GET", f"{ops.API}/openapi.yaml", headers={"Accept": "application/yaml"}))).text

    def events(self, last_event_id: Optional[int] = None) -> "AsyncEventStream":
        """Subscribe to server-sent events: ``async with client.events() as
        stream: async for ev in stream``. The subscription is live once the
        ``async with`` is entered. ``last_event_id`` first replays the kept
        events after that one."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        return AsyncEventStream(self._stream(ops.Op("GET", f"{ops.API}/events", headers=headers)))


class AsyncEventStream:
    """An async iterator of Event over GET /api/v1/events."""

    def __init__(self, cm: Any) -> None:
        self._cm = cm
        self._lines: Any = None
        self._parser = ops.SSEParser()

    @property
    def last_event_id(self) -> str:
        return self._parser.last_id

    async def connect(self) -> "AsyncEventStream":
        if self._lines is None:
            resp = await self._cm.__aenter__()
            self._lines = resp.aiter_lines()
        return self

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> Event:
        await self.connect()
        async for line in self._lines:
            ev = self._parser.feed(line)
            if ev is not None:
                return ev
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._lines is not None:
            self._lines = None
            await self._cm.__aexit__(None, None, None)

    async def __aenter__(self) -> "AsyncEventStream":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
