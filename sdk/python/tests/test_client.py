"""The sync Client against a real server: every method, streaming read
chunk by chunk while the command still runs, binary round trips, large
streamed files, events, and every error class the server can be made to
answer."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from urllib.parse import urlparse

from conftest import API_KEY, HITS, ORIGIN, RecordingTransport
from stacyvm import (
    AuthError,
    BadRequestError,
    Client,
    ConflictError,
    ExecTimeoutError,
    ForbiddenError,
    LimitError,
    MethodNotAllowedError,
    NotFoundError,
    SandboxDestroyedError,
    SandboxFileNotFoundError,
    StacyVMError,
    StreamChunk,
    StreamExit,
    UnavailableError,
    UnimplementedError,
    UnsupportedMediaTypeError,
)


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url, api_key=API_KEY, transport=RecordingTransport()) as c:
        yield c


@pytest.fixture
def sb(client: Client):
    with client.sandbox(ttl="10m", metadata={"suite": "python"}) as s:
        yield s


def test_sandbox_lifecycle(client: Client) -> None:
    owner = "owner-" + uuid.uuid4().hex[:8]
    s = client.spawn("img/x:1", provider="mock", memory_mb=256, vcpus=1, ttl=600, owner_id=owner,
                     metadata={"k": "v"}, network="none")
    assert s.id.startswith("sb-") and s.state == "running" and s.provider == "mock"
    assert s.image == "img/x:1" and s.owner_id == owner and s.metadata == {"k": "v"} and s.memory_mb == 256
    got = client.get(s.id)
    assert got.id == s.id and got.expires_at == s.expires_at
    assert [x.id for x in client.list(owner_id=owner)] == [s.id]
    assert [x.id for x in client.list(owner_id=owner, state="running", provider="mock")] == [s.id]
    longer = client.extend(s.id, "2h")
    assert longer.expires_at > s.expires_at
    assert isinstance(client.logs(s.id, lines=10), list)
    client.destroy(s.id)
    with pytest.raises(SandboxDestroyedError) as e:
        client.get(s.id)
    assert isinstance(e.value, NotFoundError) and e.value.status == 404 and e.value.request_id
    assert s.id in [x.id for x in client.list(owner_id=owner, state="destroyed")]
    assert client.prune() >= 0


def test_context_manager_destroys(client: Client) -> None:
    with client.sandbox(ttl=60) as s:
        assert client.get(s.id).state == "running"
    with pytest.raises(SandboxDestroyedError):
        client.exec(s.id, "true")


def test_exec_buffered(client: Client, sb) -> None:
    r = client.exec(sb.id, "echo out; echo err >&2; exit 7")
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (7, "out\n", "err\n", False)
    assert r.duration
    r = client.exec(sb.id, "printf", args=["%s|", "a b", "$X"], env={"X": "1"}, workdir="/tmp")
    assert r.stdout == "a b|$X|"
    r = client.exec(sb.id, 'echo "$X" "$PWD"', env={"X": "set"}, workdir="/tmp")
    assert r.stdout.split()[0] == "set"


def test_exec_timeout_carries_output(client: Client, sb) -> None:
    with pytest.raises(ExecTimeoutError) as e:
        client.exec(sb.id, "echo before; sleep 30", timeout="300ms")
    assert e.value.status == 408 and e.value.code == "TIMEOUT" and e.value.request_id
    assert e.value.result.timed_out and e.value.result.stdout == "before\n" and e.value.result.exit_code == -1


def test_exec_stream_chunk_by_chunk(client: Client, sb) -> None:
    # The command waits for a file that the test writes only after it has
    # read the first chunk: the chunk must arrive before the command ends.
    it = client.exec_stream(sb.id, "echo first; while [ ! -f go ]; do sleep 0.02; done; echo second >&2; exit 3", timeout="60s")
    first = next(it)
    assert first == StreamChunk("stdout", "first\n")
    client.write_file(sb.id, "go", "")
    rest = list(it)
    assert rest[0] == StreamChunk("stderr", "second\n")
    assert isinstance(rest[-1], StreamExit) and rest[-1].exit_code == 3 and rest[-1].duration


def test_exec_stream_timeout_and_errors(client: Client, sb) -> None:
    frames = list(client.exec_stream(sb.id, "echo a; sleep 30", timeout="300ms"))
    assert frames[0] == StreamChunk("stdout", "a\n")
    assert isinstance(frames[-1], StreamExit) and frames[-1].timed_out and frames[-1].exit_code == -1
    with pytest.raises(NotFoundError):
        list(client.exec_stream("sb-00000000000000000000", "true"))


def test_terminal(client: Client, sb) -> None:
    with client.terminal(sb.id, cols=100, rows=30, command="sh") as term:
        HITS.add(("GET", urlparse(term.url).path))  # a WebSocket, not through httpx
        assert term.url.startswith("ws://") and "cols=100" in term.url
        term.send("echo hi\n")
        # The terminal echoes what was typed ("echo hi"), then the output follows.
        out = term.read_until("echo hi\r\n", timeout=30)
        while out.count(b"hi\r\n") < 2:
            more = term.recv(timeout=30)
            assert more, out
            out += more
        term.send(b"stty size\n")
        assert b"30 100" in term.read_until("30 100", timeout=30)
        term.resize(cols=120, rows=40)
        term.send("stty size\n")
        assert b"40 120" in term.read_until("40 120", timeout=30)
        term.resize(cols=0, rows=0)  # refused: the error arrives on the read side, the session goes on
        with pytest.raises(BadRequestError) as e:
            term.read_until("never printed", timeout=30)
        assert e.value.code == "BAD_REQUEST"
        term.send("exit 3\n")
        assert term.wait(timeout=30) == 3 and term.exit_code == 3
        assert term.recv() == b""
    # A shell that is closed early: its processes are killed, close is quiet.
    with client.terminal(sb.id) as term:
        term.send("sleep 1000\n")
    with pytest.raises(NotFoundError):
        client.terminal("sb-00000000000000000000")
    with pytest.raises(BadRequestError) as e:
        client.terminal(sb.id, cols=5000)
    assert e.value.status == 400 and e.value.request_id
    with Client(client.base_url, api_key="wrong") as bad:
        with pytest.raises(AuthError):
            bad.terminal(sb.id)


def test_files_text_and_binary(client: Client, sb) -> None:
    client.write_file(sb.id, "dir/a.txt", "héllo\n", mode=0o600)
    assert client.read_text(sb.id, "/workspace/dir/a.txt") == "héllo\n"
    blob = bytes(range(256)) * 64
    client.write_file(sb.id, "dir/b.bin", blob)
    assert client.read_file(sb.id, "dir/b.bin") == blob
    st = client.stat(sb.id, "dir/a.txt")
    assert st.path == "/workspace/dir/a.txt" and st.size == len("héllo\n".encode()) and st.mode == "0600" and not st.is_dir
    names = {f.path: f for f in client.list_files(sb.id, "dir")}
    assert set(names) == {"/workspace/dir/a.txt", "/workspace/dir/b.bin"}
    assert client.list_files(sb.id)[0].path.startswith("/workspace/")
    assert sorted(client.glob(sb.id, "/workspace/dir/*")) == ["/workspace/dir/a.txt", "/workspace/dir/b.bin"]
    client.move(sb.id, "dir/a.txt", "dir/c.txt")
    client.chmod(sb.id, "dir/c.txt", "0755")
    assert client.stat(sb.id, "dir/c.txt").mode == "0755"
    with pytest.raises(SandboxFileNotFoundError) as e:
        client.read_file(sb.id, "dir/a.txt")
    assert e.value.status == 404 and e.value.request_id
    with pytest.raises(ConflictError):
        client.delete_file(sb.id, "dir")
    client.delete_file(sb.id, "dir", recursive=True)
    assert client.glob(sb.id, "/workspace/dir/*") == []


def test_large_streamed_upload_and_download(client: Client, sb, tmp_path: Path) -> None:
    size = 24 << 20
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(24):
            chunk = bytes([i]) + block[1:]
            f.write(chunk)
            h.update(chunk)
    assert client.upload(sb.id, "big.bin", src, mode="0640") == size
    assert client.stat(sb.id, "big.bin").mode == "0640"
    # From a generator: never a whole file in memory on this side.
    assert client.upload(sb.id, "gen.bin", (bytes([i]) * 4096 for i in range(100))) == 409600
    dest = tmp_path / "back.bin"
    assert client.download(sb.id, "big.bin", dest) == size
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == h.hexdigest()
    n = 0
    for piece in client.iter_file(sb.id, "big.bin"):
        assert len(piece) <= 1 << 20
        n += len(piece)
    assert n == size


def test_pause_resume(client: Client, sb) -> None:
    assert client.provider("mock")["capabilities"]["pause"] is True
    client.write_file(sb.id, "kept.txt", "still here")
    p = client.pause(sb.id)
    assert p.id == sb.id and p.state == "paused" and client.get(sb.id).state == "paused"
    with pytest.raises(ConflictError) as e:
        client.pause(sb.id)
    assert e.value.status == 409 and "paused" in e.value.message and e.value.request_id
    r = client.resume(sb.id)
    assert r.state == "running" and client.read_text(sb.id, "kept.txt") == "still here"
    with pytest.raises(ConflictError) as e:
        client.resume(sb.id)
    assert e.value.status == 409 and "running" in e.value.message
    # A command on a paused sandbox resumes it first (sandbox.auto_resume).
    client.pause(sb.id)
    assert client.exec(sb.id, "cat kept.txt").stdout == "still here"
    assert client.get(sb.id).state == "running"
    with pytest.raises(NotFoundError):
        client.pause("sb-00000000000000000000")


def test_idle_timeout_round_trips(client: Client) -> None:
    with client.sandbox(ttl="10m", idle_timeout=3600, on_idle="destroy") as s:
        assert (s.idle_timeout, s.on_idle) == (3600, "destroy")
        got = client.get(s.id)
        assert (got.idle_timeout, got.on_idle) == (3600, "destroy")
    with pytest.raises(BadRequestError):
        client.spawn(ttl="10m", idle_timeout=60, on_idle="explode")
    name = "idle-" + uuid.uuid4().hex[:8]
    t = client.create_template({"name": name, "image": "img/t:1", "idle_timeout": 1800, "on_idle": "pause"})
    try:
        assert (t["idle_timeout"], t["on_idle"]) == (1800, "pause")
        assert client.get_template(name)["idle_timeout"] == 1800
        s = client.spawn_template(name, ttl="5m")
        try:
            assert (s.idle_timeout, s.on_idle) == (1800, "pause")
        finally:
            client.destroy(s.id)
    finally:
        client.delete_template(name)


ENV_METHODS = [
    ("list_environment_specs", ()), ("get_environment_spec", ("envs-none",)),
    ("create_environment_build", ("envs-none",)), ("list_environment_builds", ()),
    ("get_environment_build", ("envb-none",)), ("cancel_environment_build", ("envb-none",)),
    ("environment_spawn_config", ("envb-none",)),
]


def test_environments(client: Client) -> None:
    owner = "envs-" + uuid.uuid4().hex[:8]
    try:
        spec = client.create_environment_spec("tools", "stacyvm/busybox:test", owner_id=owner)
    except UnavailableError as e:
        # The server builds environments only when dockerd answers; CI
        # (STACYVM_TEST_DOCKER=1) always has it.
        assert os.environ.get("STACYVM_TEST_DOCKER") != "1", e
        assert e.status == 503 and e.hint
        for name, args in ENV_METHODS:
            with pytest.raises(UnavailableError):
                getattr(client, name)(*args)
        with pytest.raises(UnavailableError):
            list(client.follow_environment_build_log("envb-none"))
        return
    assert spec["id"] and spec["owner_id"] == owner and spec["name"] == "tools"
    assert spec["base_image"] == "stacyvm/busybox:test" and spec["python_packages"] == []
    assert [x["id"] for x in client.list_environment_specs(owner_id=owner)] == [spec["id"]]
    assert client.get_environment_spec(spec["id"]) == spec
    with pytest.raises(ConflictError):
        client.create_environment_spec("tools", "stacyvm/busybox:test", owner_id=owner)
    with pytest.raises(BadRequestError) as e:
        client.create_environment_spec("bad", "stacyvm/busybox:test", ["not a package!"], owner_id=owner)
    assert "python_packages[0]" in e.value.message
    with pytest.raises(NotFoundError):
        client.get_environment_spec("envs-none")
    with pytest.raises(BadRequestError):
        client.create_environment_build(spec["id"], targets=["nowhere"])

    # No packages on a local image: a quick build, followed to its end.
    b = client.create_environment_build(spec["id"])
    assert b["spec_id"] == spec["id"] and b["status"] in ("queued", "building", "ready") and b["targets"] == ["local"]
    frames = list(client.follow_environment_build_log(b["id"]))
    last = frames[-1]
    assert last["type"] == "status" and last["status"] == "ready", frames
    assert last["image"]
    got = client.get_environment_build(b["id"])
    assert got["status"] == "ready" and got["image"] == last["image"] and got["finished_at"]
    assert [a["target"] for a in got["artifacts"]] == ["local"]
    rows = client.list_environment_builds(owner_id=owner, limit=10)
    assert [(r["build"]["id"], r["spec"]["id"]) for r in rows] == [(b["id"], spec["id"])]
    cfg = client.environment_spawn_config(b["id"])
    assert cfg == {"build_id": b["id"], "ready": True, "image": last["image"], "provider": cfg["provider"]}
    with pytest.raises(ConflictError):
        client.cancel_environment_build(b["id"])
    with pytest.raises(NotFoundError):
        list(client.follow_environment_build_log("envb-none"))


def test_templates(client: Client) -> None:
    name = "py-" + uuid.uuid4().hex[:8]
    t = client.create_template({"name": name, "image": "img/t:1", "setup": ["echo ready > setup.txt"],
                                "env": {"T": "1"}, "ttl_seconds": 600})
    assert t["name"] == name and t["version"] == 1
    with pytest.raises(ConflictError):
        client.create_template({"name": name, "image": "img/t:1"})
    assert name in [x["name"] for x in client.list_templates()]
    t["description"] = "updated"
    t2 = client.update_template(name, t)
    assert t2["version"] == 2 and client.get_template(name)["description"] == "updated"
    s = client.spawn_template(name, ttl="5m", metadata={"from": "template"})
    try:
        assert s.template == name and client.read_text(s.id, "setup.txt") == "ready\n"
        assert client.exec(s.id, "echo $T").stdout == "1\n"
    finally:
        client.destroy(s.id)
    client.delete_template(name)
    with pytest.raises(NotFoundError):
        client.get_template(name)


def test_pool_status_and_claim(client: Client) -> None:
    name = "pypool-" + uuid.uuid4().hex[:8]
    client.create_template({"name": name, "image": "img/t:1", "pool_size": 1, "setup": ["echo warm > w.txt"]})
    try:
        deadline = time.monotonic() + 60
        while True:
            pools = {p["name"]: p for p in client.pool_status()["pools"]}
            pool = pools.get("template:" + name)
            if pool is not None and pool["ready"] == 1:
                break
            assert time.monotonic() < deadline, f"pool never filled: {pools}"
            time.sleep(0.05)
        assert pool["target"] == 1 and pool["template"] == name and pool["policy"] == "cold"
        st = client.pool_status()
        assert st["enabled"] is True and st["max_users_per_vm"] == 1
        s = client.spawn_template(name, owner_id="py-pool")
        try:
            assert client.read_text(s.id, "w.txt") == "warm\n"
            claimed = {p["name"]: p for p in client.pool_status()["pools"]}["template:" + name]["claimed"]
            assert claimed == 1
        finally:
            client.destroy(s.id)
    finally:
        client.delete_template(name)


def test_system(client: Client) -> None:
    provs = client.providers()
    assert [p["name"] for p in provs] == ["mock"] and provs[0]["default"]
    caps = client.provider("mock")["capabilities"]
    assert caps["isolation"] == "none" and caps["disk_limit"] is False
    assert client.test_providers() == {"mock": True}
    assert isinstance(client.snapshots(), list)
    assert "enabled" in client.pool_status()
    assert client.health()["status"] == "ok"
    assert "spawns_total" in client.metrics()
    assert "stacyvm_" in client.prometheus_metrics()
    assert client.openapi().startswith("openapi: 3")
    with pytest.raises(NotFoundError):
        client.provider("nope")


def test_events(client: Client) -> None:
    with client.events() as stream:
        # Subscribed: everything from here on arrives live.
        s = client.spawn(ttl=60)
        client.destroy(s.id)
        mine = []
        for ev in stream:
            if ev.sandbox_id == s.id:
                mine.append(ev)
                if ev.type == "sandbox.destroyed":
                    break
    assert mine[0].type == "sandbox.created" and mine[-1].type == "sandbox.destroyed"
    assert mine[0].data.get("provider") == "mock"
    assert all(a.id < b.id for a, b in zip(mine, mine[1:]))
    # Resuming after an event replays, from the server's history, what
    # followed it.
    with client.events(last_event_id=mine[0].id) as replay:
        assert mine[0].id < next(replay).id <= mine[1].id


def test_error_classes(server, client: Client, sb) -> None:
    with pytest.raises(BadRequestError) as e:
        client.spawn(ttl="soon")
    assert e.value.status == 400 and e.value.hint and e.value.request_id
    with pytest.raises(AuthError) as a:
        with Client(server.url, api_key="wrong") as bad:
            bad.list()
    assert a.value.status == 401
    # The mock cannot limit disk space, and says so.
    with pytest.raises(UnimplementedError) as un:
        client.spawn(disk_mb=100, ttl=60)
    assert un.value.status == 501 and un.value.hint
    with pytest.raises(NotFoundError) as nf:
        client.get("sb-00000000000000000000")
    assert type(nf.value) is NotFoundError
    # A browser page whose origin the server does not list.
    with Client(server.url, api_key=API_KEY, headers={"Origin": "http://evil.example"}) as foreign:
        with pytest.raises(ForbiddenError):
            foreign.spawn()
    with Client(server.url, api_key=API_KEY, headers={"Origin": ORIGIN}) as allowed:
        allowed.write_file(sb.id, "from-origin.txt", "ok")
    # Too many sandboxes for one owner (the server allows 2).
    owner = "limited-" + uuid.uuid4().hex[:6]
    made = [client.spawn(owner_id=owner, ttl=60) for _ in range(2)]
    with pytest.raises(LimitError) as lim:
        client.spawn(owner_id=owner, ttl=60)
    assert lim.value.status == 429 and lim.value.code == "RESOURCE_LIMIT"
    for s in made:
        client.destroy(s.id)
    # Wrong method and wrong body type: not produced by the SDK's methods,
    # so sent by hand through its plumbing.
    from stacyvm import _ops as ops

    with pytest.raises(MethodNotAllowedError):
        client._send(ops.Op("PATCH", f"{ops.API}/sandboxes"))
    with pytest.raises(UnsupportedMediaTypeError):
        client._send(ops.Op("POST", f"{ops.API}/sandboxes", headers={"Content-Type": "text/plain"}), content=b"{}")
    assert issubclass(SandboxDestroyedError, StacyVMError)


def test_error_mapping_without_a_server() -> None:
    """Classes no live request can provoke on the mock (a provider down, an
    internal error), and Retry-After, through httpx's MockTransport."""
    from stacyvm import InternalError, MisdirectedRequestError, UnavailableError

    answers = {
        "/api/v1/providers": (503, {"code": "UNAVAILABLE", "message": "docker is down", "request_id": "r1", "hint": "start it"}, {}),
        "/api/v1/snapshots": (501, {"code": "UNIMPLEMENTED", "message": "no", "request_id": "r2"}, {}),
        "/api/v1/health": (500, {"code": "INTERNAL_ERROR", "message": "see log", "request_id": "r3"}, {}),
        "/api/v1/metrics": (421, {"code": "MISDIRECTED_REQUEST", "message": "host", "request_id": "r4"}, {}),
        "/api/v1/sandboxes": (429, {"code": "RESOURCE_LIMIT", "message": "full", "request_id": "r5"}, {"Retry-After": "7"}),
        "/api/v1/pool/status": (502, b"<html>bad gateway</html>", {"X-Request-ID": "r6"}),
    }

    def handler(req: httpx.Request) -> httpx.Response:
        status, body, headers = answers[req.url.path]
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    with Client("http://sdk.test", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(UnavailableError) as e:
            c.providers()
        assert (e.value.request_id, e.value.hint, e.value.status) == ("r1", "start it", 503)
        with pytest.raises(UnimplementedError):
            c.snapshots()
        with pytest.raises(InternalError):
            c.health()
        with pytest.raises(MisdirectedRequestError):
            c.metrics()
        with pytest.raises(LimitError) as lim:
            c.spawn()
        assert lim.value.retry_after == 7
        with pytest.raises(InternalError) as gw:
            c.pool_status()
        assert gw.value.status == 502 and gw.value.request_id == "r6"
