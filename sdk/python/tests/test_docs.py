"""The docs page's quick start, run verbatim (only the address is
substituted), and the example agent loop, against the suite's server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import API_KEY, REPO


def run_python(code_or_file: list, server) -> subprocess.CompletedProcess:
    env = {**os.environ, "STACYVM_API_KEY": API_KEY, "STACYVM_URL": server.url,
           "PYTHONPATH": str(REPO / "sdk" / "python")}
    return subprocess.run([sys.executable, *code_or_file], env=env, capture_output=True, text=True, timeout=120)


def test_quick_start_runs_verbatim(server) -> None:
    page = (REPO / "docs" / "sdk-python.md").read_text()
    section = page.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    assert "http://127.0.0.1:7423" in code
    r = run_python(["-c", code.replace("http://127.0.0.1:7423", server.url)], server)
    assert r.returncode == 0, r.stderr
    assert "hello from sandbox" in r.stdout and "StreamExit(exit_code=0" in r.stdout


def test_example_agent_loop(server) -> None:
    r = run_python([str(REPO / "sdk" / "python" / "examples" / "agent_loop.py")], server)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("DONE") and "tests pass" in r.stdout
