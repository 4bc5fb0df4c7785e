"""Smoke path on a real runtime: a second server with only the Docker
provider spawns stacyvm/busybox:test, and an environment built on the same
dockerd. Runs when STACYVM_TEST_DOCKER=1
(scripts/test sets it after starting dockerd)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from conftest import API_KEY, RecordingTransport, start_server, stop_server
from stacyvm import Client, StreamExit


@pytest.mark.skipif(os.environ.get("STACYVM_TEST_DOCKER") != "1", reason="needs Docker: set STACYVM_TEST_DOCKER=1 (scripts/test does)")
def test_docker_smoke() -> None:
    with tempfile.TemporaryDirectory(prefix="stacyvm-py-docker-") as d:
        srv = start_server(Path(d), provider="docker", extra="docker:\n  network: none\n")
        try:
            with Client(srv.url, api_key=API_KEY, transport=RecordingTransport()) as c:
                with c.sandbox("stacyvm/busybox:test", ttl="5m") as sb:
                    assert c.get(sb.id).provider == "docker"
                    c.write_file(sb.id, "x.bin", bytes(range(256)))
                    assert c.read_file(sb.id, "x.bin") == bytes(range(256))
                    r = c.exec(sb.id, "cat /etc/passwd | head -1; uname -s")
                    assert r.exit_code == 0 and "root" in r.stdout and "Linux" in r.stdout
                    frames = list(c.exec_stream(sb.id, "echo a; sleep 0.2; echo b"))
                    assert isinstance(frames[-1], StreamExit) and frames[-1].exit_code == 0
                    with c.terminal(sb.id, cols=90, rows=20) as term:
                        term.send("stty size; exit 5\n")
                        assert b"20 90" in term.read_until("20 90", timeout=60)
                        assert term.wait(timeout=60) == 5
                # An environment built on this dockerd spawns where its
                # spawn-config says.
                spec = c.create_environment_spec("smoke", "stacyvm/busybox:test", owner_id="py-docker")
                b = c.create_environment_build(spec["id"])
                assert list(c.follow_environment_build_log(b["id"]))[-1]["status"] == "ready"
                cfg = c.environment_spawn_config(b["id"])
                assert cfg["ready"] and cfg["provider"] == "docker"
                with c.sandbox(cfg["image"], provider=cfg["provider"], ttl="5m") as env_sb:
                    assert c.get(env_sb.id).image == cfg["image"]
                    assert c.exec(env_sb.id, "echo built").stdout == "built\n"
        finally:
            stop_server(srv)
