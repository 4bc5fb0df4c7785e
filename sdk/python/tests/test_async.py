"""AsyncClient against the same server: every method, awaited."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from conftest import API_KEY, AsyncRecordingTransport
from stacyvm import (
    AsyncClient,
    AuthError,
    ConflictError,
    ExecTimeoutError,
    NotFoundError,
    SandboxDestroyedError,
    SandboxFileNotFoundError,
    StreamChunk,
    StreamExit,
    UnavailableError,
)


def client_for(server) -> AsyncClient:
    return AsyncClient(server.url, api_key=API_KEY, transport=AsyncRecordingTransport())


async def test_async_everything(server, tmp_path: Path) -> None:
    async with client_for(server) as c:
        assert (await c.health())["status"] == "ok"
        async with c.events() as events:
            async with c.sandbox("img/a:1", ttl="10m", metadata={"suite": "async"}) as sb:
                assert (await c.get(sb.id)).state == "running"
                assert sb.id in [s.id for s in await c.list(state="running")]
                assert (await c.extend(sb.id, 3600)).expires_at > sb.expires_at
                assert isinstance(await c.logs(sb.id), list)

                assert (await c.pause(sb.id)).state == "paused"
                with pytest.raises(ConflictError):
                    await c.pause(sb.id)
                assert (await c.resume(sb.id)).state == "running"
                with pytest.raises(ConflictError):
                    await c.resume(sb.id)
                await c.pause(sb.id)
                assert (await c.exec(sb.id, "echo awake")).stdout == "awake\n"
                assert (await c.get(sb.id)).state == "running"

                r = await c.exec(sb.id, "echo hi; exit 2")
                assert (r.exit_code, r.stdout) == (2, "hi\n")
                with pytest.raises(ExecTimeoutError) as e:
                    await c.exec(sb.id, "echo x; sleep 30", timeout=0.3)
                assert e.value.result.stdout == "x\n"

                stream = c.exec_stream(sb.id, "echo one; while [ ! -f go ]; do sleep 0.02; done; echo two")
                assert await stream.__anext__() == StreamChunk("stdout", "one\n")
                await c.write_file(sb.id, "go", b"")
                rest = [f async for f in stream]
                assert rest[0] == StreamChunk("stdout", "two\n") and rest[-1] == StreamExit(0, False, rest[-1].duration)

                async with await c.terminal(sb.id, 80, 24, command="sh") as term:
                    await term.send(b"echo hi\n")
                    out = await term.read_until(b"echo hi\r\n", timeout=30)
                    while out.count(b"hi\r\n") < 2:
                        more = await term.recv()
                        assert more, out
                        out += more
                    await term.resize(100, 50)
                    await term.send("stty size; exit 4\n")
                    out = b"".join([b async for b in term])
                    assert b"50 100" in out and term.exit_code == 4

                await c.write_file(sb.id, "t.txt", "text", mode="0644")
                assert await c.read_text(sb.id, "t.txt") == "text"
                blob = bytes(range(256)) * 1000
                await c.write_file(sb.id, "b.bin", blob)
                assert await c.read_file(sb.id, "b.bin") == blob
                src = tmp_path / "up.bin"
                src.write_bytes(blob * 20)
                assert await c.upload(sb.id, "up.bin", src) == len(blob) * 20
                with open(src, "rb") as f:
                    assert await c.upload(sb.id, "up2.bin", f, mode=0o600) == len(blob) * 20

                async def gen():
                    for i in range(10):
                        yield bytes([i]) * 1000

                assert await c.upload(sb.id, "gen.bin", gen()) == 10000
                assert await c.upload(sb.id, "iter.bin", [b"a", b"b"]) == 2
                assert await c.download(sb.id, "up.bin", tmp_path / "down.bin") == len(blob) * 20
                assert (tmp_path / "down.bin").read_bytes() == blob * 20
                n = 0
                async for piece in c.iter_file(sb.id, "up2.bin"):
                    n += len(piece)
                assert n == len(blob) * 20
                assert (await c.stat(sb.id, "up2.bin")).mode == "0600"
                assert "/workspace/t.txt" in [f.path for f in await c.list_files(sb.id)]
                assert await c.glob(sb.id, "/workspace/*.txt") == ["/workspace/t.txt"]
                await c.move(sb.id, "t.txt", "u.txt")
                await c.chmod(sb.id, "u.txt", 0o700)
                assert (await c.stat(sb.id, "u.txt")).mode == "0700"
                await c.delete_file(sb.id, "u.txt")
                with pytest.raises(SandboxFileNotFoundError):
                    await c.read_file(sb.id, "u.txt")
            with pytest.raises(SandboxDestroyedError):
                await c.exec(sb.id, "true")
            types = []
            async for ev in events:
                if ev.sandbox_id == sb.id:
                    types.append(ev.type)
                    if ev.type == "sandbox.destroyed":
                        break
            assert types[0] == "sandbox.created" and "sandbox.extended" in types

        name = "async-" + uuid.uuid4().hex[:8]
        t = await c.create_template({"name": name, "image": "img/t:1"})
        with pytest.raises(ConflictError):
            await c.create_template({"name": name, "image": "img/t:1"})
        assert name in [x["name"] for x in await c.list_templates()]
        t["pool_size"] = 0
        assert (await c.update_template(name, t))["version"] == 2
        assert (await c.get_template(name))["version"] == 2
        s = await c.spawn_template(name, ttl=60)
        await c.destroy(s.id)
        await c.delete_template(name)
        with pytest.raises(NotFoundError):
            await c.get_template(name)
        assert await c.prune() >= 0

        assert [p["name"] for p in await c.providers()] == ["mock"]
        assert (await c.provider("mock"))["name"] == "mock"
        assert await c.test_providers() == {"mock": True}
        assert isinstance(await c.snapshots(), list)
        assert "vms" in await c.pool_status()
        assert "execs_total" in await c.metrics()
        assert "stacyvm_" in await c.prometheus_metrics()
        assert "operationId" in await c.openapi()

    async with AsyncClient(server.url, api_key="wrong") as bad:
        with pytest.raises(AuthError) as a:
            await bad.list()
        assert a.value.request_id


async def test_async_environments(server) -> None:
    async with client_for(server) as c:
        owner = "envs-" + uuid.uuid4().hex[:8]
        try:
            spec = await c.create_environment_spec("tools", "stacyvm/busybox:test", owner_id=owner)
        except UnavailableError:
            assert os.environ.get("STACYVM_TEST_DOCKER") != "1"
            with pytest.raises(UnavailableError):
                await c.get_environment_build("envb-none")
            return
        assert (await c.get_environment_spec(spec["id"]))["name"] == "tools"
        assert [x["id"] for x in await c.list_environment_specs(owner_id=owner)] == [spec["id"]]
        with pytest.raises(ConflictError):
            await c.create_environment_spec("tools", "stacyvm/busybox:test", owner_id=owner)
        b = await c.create_environment_build(spec["id"], targets=["local"])
        frames = [f async for f in c.follow_environment_build_log(b["id"])]
        assert frames[-1]["type"] == "status" and frames[-1]["status"] == "ready", frames
        assert (await c.get_environment_build(b["id"]))["status"] == "ready"
        assert [r["build"]["id"] for r in await c.list_environment_builds(owner_id=owner)] == [b["id"]]
        assert (await c.environment_spawn_config(b["id"]))["image"] == frames[-1]["image"]
        with pytest.raises(ConflictError):
            await c.cancel_environment_build(b["id"])
