"""scripts/up, the newcomer's first command, run as written, then scripts/down.

It uses the binary that is there (CMESH_BIN, default target/release/cmesh: the examples
step runs after the release build), a mesh directory, NATS port and client home of its
own, so a developer's running mesh and key are left alone. The demo must end with every
node holding the same root and heads, and scripts/down must leave no process behind.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scripts_up_walks_through_the_story_and_scripts_down_stops_it():
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as mesh_dir:
        env = dict(os.environ)
        env.update(
            CMESH_HOME=home,
            CMESH_UP_DIR=mesh_dir,
            CMESH_UP_PORT=str(free_port()),
            CMESH_SKIP_BUILD="1",
            NO_COLOR="1",
        )
        env.setdefault("CMESH_BIN", str(ROOT / "target" / "release" / "cmesh"))
        try:
            up = subprocess.run(
                ["scripts/up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            out = up.stdout + up.stderr
            assert up.returncode == 0, out
            for step in range(1, 9):
                assert f"{step}/8" in out, f"step {step} missing:\n{out}"
            roots = re.findall(r"node (\d): (\{.*\})", out)
            assert [n for n, _ in roots] == ["1", "2", "3"], out
            assert len({r for _, r in roots}) == 1, f"the nodes disagree:\n{out}"
            assert '"applied":6' in roots[0][1], out
            assert '"result": 1' in out, out
            pid = int(Path(mesh_dir, "mesh.pid").read_text())
        finally:
            down = subprocess.run(
                ["scripts/down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
            )
        assert down.returncode == 0, down.stdout + down.stderr
        # Every process the mesh started is in its session; exited ones not yet reaped
        # (zombies) are gone for all purposes.
        group = subprocess.run(["ps", "-o", "stat=,cmd=", "-s", str(pid)], capture_output=True, text=True)
        alive = [line for line in group.stdout.splitlines() if not line.strip().startswith("Z")]
        assert alive == [], f"left behind: {alive}"
