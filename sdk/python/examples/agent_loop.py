"""An agent loop on StacyVM, with a scripted "model" instead of an LLM.

A real agent asks a model for the next tool call, runs it in the sandbox,
and feeds the result back. Here ScriptedModel replays a fixed plan (write a
program and its test, run the test, fix the bug the test reveals, run it
again), so the loop runs without any model key. Swap ScriptedModel.next for
a call to your model and keep the rest.

    STACYVM_URL=http://127.0.0.1:7423 STACYVM_API_KEY=... python3 agent_loop.py
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from stacyvm import Client, StacyVMError

PLAN: List[Dict[str, Any]] = [
    {"tool": "write_file", "path": "calc.py", "content": "def add(a, b):\n    return a - b\n"},
    {"tool": "write_file", "path": "test_calc.py",
     "content": "from calc import add\nassert add(2, 3) == 5, f'add(2, 3) = {add(2, 3)}'\nprint('tests pass')\n"},
    {"tool": "exec", "command": "python3 -B test_calc.py"},
    # After seeing the failure, the "model" fixes the bug...
    {"tool": "write_file", "path": "calc.py", "content": "def add(a, b):\n    return a + b\n"},
    # ...and checks again, streaming the output.
    {"tool": "exec_stream", "command": "python3 -B test_calc.py && echo done"},
    {"tool": "read_file", "path": "calc.py"},
    {"tool": "finish"},
]


class ScriptedModel:
    """Stands in for an LLM: returns the plan's next step, given the last
    observation (a real model would decide from it)."""

    def __init__(self, plan: List[Dict[str, Any]]) -> None:
        self.plan = list(plan)
        self.seen: List[str] = []

    def next(self, observation: Optional[str]) -> Dict[str, Any]:
        if observation is not None:
            self.seen.append(observation)
        return self.plan.pop(0)


def run_tool(client: Client, sandbox_id: str, step: Dict[str, Any]) -> str:
    tool = step["tool"]
    try:
        if tool == "write_file":
            client.write_file(sandbox_id, step["path"], step["content"])
            return f"wrote {step['path']}"
        if tool == "exec":
            r = client.exec(sandbox_id, step["command"], timeout="30s")
            return f"exit {r.exit_code}\nstdout: {r.stdout}stderr: {r.stderr}"
        if tool == "exec_stream":
            out = []
            for ev in client.exec_stream(sandbox_id, step["command"], timeout="30s"):
                out.append(getattr(ev, "data", "") or f"[exit {ev.exit_code}]")  # type: ignore[union-attr]
            return "".join(out)
        if tool == "read_file":
            return client.read_text(sandbox_id, step["path"])
    except StacyVMError as e:  # the model sees errors as observations
        return f"error {e.code}: {e.message} (hint: {e.hint})"
    return f"unknown tool {tool}"


def main() -> int:
    url = os.environ.get("STACYVM_URL", "http://127.0.0.1:7423")
    model = ScriptedModel(PLAN)
    with Client(url, api_key=os.environ.get("STACYVM_API_KEY")) as client:
        with client.sandbox(ttl="10m", metadata={"agent": "scripted"}) as sb:
            observation: Optional[str] = None
            while True:
                step = model.next(observation)
                if step["tool"] == "finish":
                    break
                observation = run_tool(client, sb.id, step)
                print(f"> {step['tool']} {step.get('path') or step.get('command')}\n{observation}")
    ok = "AssertionError" in model.seen[2] and model.seen[4].endswith("done\n[exit 0]")
    print("DONE" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
