"""A real `stacyvm serve` for the suite: the binary from $STACYVM_BIN (or
built with `go build`), a free loopback port, a temporary database, the mock
provider named explicitly, an API key, a per-owner limit of 2 (so that the
429 path is reachable) and one allowed browser origin."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "sdk" / "python"))

API_KEY = "sdk-test-key"
ORIGIN = "http://app.example"


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, provider: str = "mock", extra: str = "") -> Server:
    binary = os.environ.get("STACYVM_BIN")
    if not binary:
        binary = str(tmp / "stacyvm")
        subprocess.run(["go", "build", "-o", binary, "./cmd/stacyvm"], cwd=REPO, check=True)
        # The Docker provider runs the agent found next to the binary.
        subprocess.run(["go", "build", "-o", str(tmp / "stacyvm-agent"), "./cmd/stacyvm-agent"], cwd=REPO, check=True,
                       env={**os.environ, "CGO_ENABLED": "0"})
    port = free_port()
    cfg = tmp / "stacyvm.yaml"
    cfg.write_text(
        f"""server:
  listen: 127.0.0.1:{port}
  api_key: {API_KEY}
  cors_origins: ["{ORIGIN}"]
store:
  path: {tmp / "stacyvm.db"}
log:
  level: warn
sandbox:
  max_per_owner: 2
  default_image: test/image:1
provider:
  enabled: [{provider}]
  default: {provider}
mock:
  dir: {tmp / "mock"}
{extra}"""
    )
    log = tmp / "server.log"
    proc = subprocess.Popen([binary, "serve", "--config", str(cfg)], stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stacyvm serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return Server(url, proc, log)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"stacyvm serve not healthy after 60 s:\n{log.read_text()}")


def stop_server(s: Server) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="stacyvm-py-") as d:
        s = start_server(Path(d))
        yield s
        stop_server(s)


# -- the route walk: every request any test makes is recorded -------------

HITS: Set[Tuple[str, str]] = set()


def record(request: httpx.Request) -> None:
    HITS.add((request.method, request.url.path))


class RecordingTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        record(request)
        return super().handle_request(request)


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        record(request)
        return await super().handle_async_request(request)


def openapi_operations() -> List[Tuple[str, str, str]]:
    """(METHOD, path template, operationId) of docs/openapi.yaml, read by
    its layout: paths at two spaces, methods at four."""
    ops: List[Tuple[str, str, str]] = []
    path = method = ""
    in_paths = False
    for line in (REPO / "docs" / "openapi.yaml").read_text().splitlines():
        if line.startswith("paths:"):
            in_paths = True
            continue
        if in_paths and re.match(r"^\S", line):
            break
        if m := re.match(r"^  (/\S*):\s*$", line):
            path = m.group(1)
        elif m := re.match(r"^    (get|put|post|delete|patch|head|options):\s*$", line):
            method = m.group(1).upper()
        elif m := re.match(r"^      operationId:\s*(\S+)", line):
            ops.append((method, path, m.group(1)))
    return ops
