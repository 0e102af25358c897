"""The nats CLI examples in scripts/examples/, checked with nats-py against a real mesh.

The `nats` CLI is not installable everywhere (CI has no such package), so this test does
not run the scripts. Instead it READS them: every `nats req SUBJECT PAYLOAD [-H K:V]...`
line is parsed with shlex (as bash would split it, `$VARS` left in place), the variables are
filled in, and the same subject, headers and payload are sent with nats-py. A comment line
`# expect: <status>` just above a request gives the Cmtp-Status its reply must carry. So the
scripts and this test cannot drift apart: change a payload in a script and this test sends
the new one.

The mesh: by default the test starts its own nats-server on a free port, writes a genesis
with `cmesh mesh init` and starts its voters (`cmesh node run`, two by default) in temp dirs. Set CMESH_TEST_NATS_URL (and
optionally CMESH_TEST_NODE, a node address) to use a running mesh instead, e.g. the one
scripts/up starts. CMESH_BIN names the binary (default target/release/cmesh), NATS_SERVER
the nats-server (default: on the PATH), CMESH_TEST_NODES how many nodes to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"
SCRIPTS = ["login.sh", "fqmn.sh", "register-name.sh", "events.sh", "micro.sh", "apps.sh", "consensus.sh"]
READY = re.compile(r"cmesh node (0x[0-9a-fA-F]+) ready")
VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
# `$SRV` in '$SRV.PING.cmesh' is part of the subject, not a shell variable (single quotes).
LITERAL_VARS = {"SRV"}
STOP_TOKENS = {")", "|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "2>&1"}
TIMEOUT = 10.0


# ---------------------------------------------------------------- parsing the scripts


@dataclass
class Req:
    script: str
    line: int
    subject: str
    payload: str
    headers: dict[str, str] = field(default_factory=dict)
    expect: int | None = None

    def render(self, env: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
        def sub(text: str) -> str:
            def one(m: re.Match) -> str:
                name = m.group(1)
                if name in LITERAL_VARS:
                    return m.group(0)
                if name not in env:
                    raise KeyError(f"{self.script}:{self.line}: no value for ${name}")
                return env[name]

            return VAR.sub(one, text)

        return sub(self.subject), sub(self.payload).encode(), {k: sub(v) for k, v in self.headers.items()}

    def variables(self) -> set[str]:
        text = " ".join([self.subject, self.payload, *self.headers.values()])
        return {m.group(1) for m in VAR.finditer(text)} - LITERAL_VARS


def logical_lines(path: Path):
    """(line number, text) with backslash continuations joined."""
    buf, start = "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        yield start, (buf + raw).strip()
        buf = ""


def split_command(rest: str) -> list[str]:
    lex = shlex.shlex(rest, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out = []
    for tok in lex:
        if tok in STOP_TOKENS:
            break
        out.append(tok)
    return out


def parse_script(name: str) -> tuple[list[Req], list[str]]:
    """The `nats req` requests and the `nats sub` subjects of one script, in order."""
    reqs, subs, expect = [], [], None
    for n, text in logical_lines(EXAMPLES / name):
        m = re.match(r"#\s*expect:\s*(\d{3})", text)
        if m:
            expect = int(m.group(1))
            continue
        if text.startswith("#"):
            continue
        m = re.search(r"\bnats (req|sub)\s+(.*)", text)
        if not m:
            continue
        args = split_command(m.group(2))
        if m.group(1) == "sub":
            subs.append(args[0])
            continue
        positional, headers, i = [], {}, 0
        while i < len(args):
            a = args[i]
            if a in ("-H", "--header"):
                k, v = args[i + 1].split(":", 1)
                headers[k.strip()] = v.strip()
                i += 2
            elif a.startswith("--header="):
                k, v = a.split("=", 1)[1].split(":", 1)
                headers[k.strip()] = v.strip()
                i += 1
            elif a.startswith("-"):
                i += 1  # --raw, --timeout=2s, --replies=0: flags of the CLI, not of the message
            else:
                positional.append(a)
                i += 1
        assert len(positional) in (1, 2), f"{name}:{n}: cannot read `{text}`"
        payload = positional[1] if len(positional) == 2 else ""
        reqs.append(Req(name, n, positional[0], payload, headers, expect))
        expect = None
    return reqs, subs


def find(reqs: list[Req], contains: str) -> Req:
    hits = [r for r in reqs if contains in r.payload or contains in r.subject]
    assert len(hits) == 1, f"expected one request with {contains!r}, found {len(hits)}"
    return hits[0]


# ---------------------------------------------------------------- the mesh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process whose merged output is collected by a thread."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name, self.lines = name, []
        self.p = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = pattern.search(line)
                if m:
                    return m
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no line matching {pattern.pattern!r}\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(f"  {self.name}| {x}" for x in self.lines[-n:])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@dataclass
class Mesh:
    url: str
    nodes: list[str]
    own: bool  # started by this test (so the node count is known)


@pytest.fixture(scope="session")
def mesh():
    url = os.environ.get("CMESH_TEST_NATS_URL")
    if url:
        node = os.environ.get("CMESH_TEST_NODE")
        yield Mesh(url, [node] if node else [], own=False)
        return

    cmesh = os.environ.get("CMESH_BIN", str(ROOT / "target" / "release" / "cmesh"))
    assert os.access(cmesh, os.X_OK), f"no cmesh binary at {cmesh}: cargo build --release first"
    nats_server = os.environ.get("NATS_SERVER") or shutil.which("nats-server")
    assert nats_server, "nats-server not found (scripts/lib.sh ensure_nats_server installs it)"

    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="cmesh-examples-") as tmp:
        try:
            port = free_port()
            url = f"nats://127.0.0.1:{port}"
            srv = Proc("nats", [nats_server, "-a", "127.0.0.1", "-p", str(port)])
            procs.append(srv)
            srv.wait_for(re.compile(r"Server is ready"), 20)

            env = dict(os.environ, CMESH_HOME=f"{tmp}/home", RUST_LOG=os.environ.get("RUST_LOG", "info"))
            for k in ("CMESH_NATS_URL", "CMESH_DATA", "CMESH_GENESIS", "CMESH_CONFIG", "CMESH_ADMIN"):
                env.pop(k, None)
            count = int(os.environ.get("CMESH_TEST_NODES", "2"))
            subprocess.run(
                [cmesh, "mesh", "init", "--dir", tmp, "--voters", str(count), "--name", "examples"],
                env=env, check=True, capture_output=True,
            )
            nodes = []
            for i in range(1, count + 1):
                argv = [cmesh, "node", "run", "--nats", url, "--data", f"{tmp}/node{i}",
                        "--genesis", f"{tmp}/genesis.json"]
                node = Proc(f"node{i}", argv, env)
                procs.append(node)
                nodes.append(node.wait_for(READY, 60).group(1))
            yield Mesh(url, nodes, own=True)
        except BaseException:
            for p in procs:
                print(p.tail())
            raise
        finally:
            for p in reversed(procs):
                p.stop()


# ---------------------------------------------------------------- NATS helpers


@pytest.fixture(scope="session")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="session")
def nc(mesh, loop):
    conn = loop.run_until_complete(nats.connect(mesh.url, connect_timeout=5, max_reconnect_attempts=0))
    run = loop.run_until_complete

    # The mesh is up when the router answers a ping (bounded).
    deadline = time.monotonic() + 30
    while True:
        try:
            msg = run(conn.request("cmesh.fqmn", b"P:ping", timeout=2))
            if status(msg) == 200:
                break
        except Exception:  # noqa: BLE001 - no responders / timeout while nodes start
            pass
        assert time.monotonic() < deadline, "cmesh.fqmn P:ping never answered 200"
        time.sleep(0.5)
    yield conn
    run(conn.close())


def header(msg, name: str) -> str | None:
    for k, v in (msg.headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def status(msg) -> int | None:
    v = header(msg, "Cmtp-Status")
    return int(v.split()[0]) if v else None


def send(loop, nc, req: Req, env: dict[str, str], retry_unavailable: float = 0):
    subject, payload, headers = req.render(env)
    deadline = time.monotonic() + retry_unavailable
    while True:
        msg = loop.run_until_complete(nc.request(subject, payload, timeout=TIMEOUT, headers=headers or None))
        if status(msg) == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        return msg


def check(msg, req: Req):
    """The CMTP envelope and the status the script announced."""
    where = f"{req.script}:{req.line} {req.subject} {req.payload[:80]!r}"
    body = msg.data.decode(errors="replace")
    assert header(msg, "Cmtp-Version") == "CMTP/0", f"{where}: no Cmtp-Version CMTP/0 in {msg.headers}"
    want = req.expect if req.expect is not None else 200
    assert status(msg) == want, f"{where}: Cmtp-Status {status(msg)} != {want}: {body}"


def rpc_result(msg, req: Req) -> dict:
    body = json.loads(msg.data)
    assert body.get("jsonrpc") == "2.0", f"{req.script}:{req.line}: not JSON-RPC 2.0: {body}"
    assert "error" not in body, f"{req.script}:{req.line}: {body['error']}"
    assert "result" in body, f"{req.script}:{req.line}: no result: {body}"
    return body["result"]


def contains_address(msg, address: str) -> bool:
    return address.lower() in msg.data.decode(errors="replace").lower()


# ---------------------------------------------------------------- login (login.sh)


@pytest.fixture(scope="session")
def login(loop, nc, mesh):
    reqs, _ = parse_script("login.sh")
    account = Account.create()
    address = account.address.lower()
    # login.sh sends both steps to one node when it knows one (the session lives there).
    env = {"ADDRESS": address, "RPC": f"cmesh.node.{mesh.nodes[0]}.rpc" if mesh.nodes else "cmesh.rpc"}

    challenge_req = find(reqs, "iam.challenge")
    msg = send(loop, nc, challenge_req, env)
    check(msg, challenge_req)
    challenge = rpc_result(msg, challenge_req)
    for key in ("session", "message", "expires_at"):
        assert key in challenge, f"iam.challenge result lacks {key}: {challenge}"

    signature = Account.sign_message(encode_defunct(text=challenge["message"]), private_key=account.key).signature
    env.update(SESSION=str(challenge["session"]), SIGNATURE="0x" + bytes(signature).hex())

    login_req = find(reqs, "iam.login")
    msg = send(loop, nc, login_req, env)
    check(msg, login_req)
    result = rpc_result(msg, login_req)
    for key in ("token", "address", "expires_at"):
        assert key in result, f"iam.login result lacks {key}: {result}"
    assert result["address"].lower() == address
    return {"ADDRESS": address, "TOKEN": result["token"]}


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_readable(script):
    reqs, _ = parse_script(script)
    assert reqs, f"{script} has no `nats req` line"
    text = (EXAMPLES / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n"), f"{script}: shebang"
    assert os.access(EXAMPLES / script, os.X_OK), f"{script} is not executable"
    known = {
        "RPC", "ADDRESS", "SESSION", "SIGNATURE", "TOKEN", "NODE", "NAME", "NAME2", "TARGET", "TOPIC", "WASM", "CONTEXT",
        "NEW_NODE",
    }
    for r in reqs:
        assert r.variables() <= known, f"{script}:{r.line}: unknown variables {r.variables() - known}"


def test_login(login):
    assert login["TOKEN"].count(".") == 2, "the token is a JWT (header.payload.signature)"


def test_fqmn(loop, nc, mesh, login):
    reqs, _ = parse_script("fqmn.sh")
    env = dict(login, NODE=mesh.nodes[0] if mesh.nodes else "")
    sent = 0
    for req in reqs:
        if "$NODE" in req.subject and not mesh.nodes:
            continue
        msg = send(loop, nc, req, env)
        check(msg, req)
        sent += 1
        if "I:whoami" in req.payload and req.expect in (None, 200):
            assert contains_address(msg, login["ADDRESS"]), f"whoami does not name the caller: {msg.data!r}"
    assert sent >= 3


def test_consensus(loop, nc, mesh, login):
    """consensus.sh: C:status names a leader among the voters; C:nodes lists them; an
    admission by a caller who is no mesh admin is refused (403)."""
    reqs, _ = parse_script("consensus.sh")
    assert len(reqs) == 3
    env = dict(login, NEW_NODE="0x" + secrets.token_hex(20))
    for req in reqs:
        msg = send(loop, nc, req, env, retry_unavailable=10)
        check(msg, req)
        if req.payload == "C:status":
            body = json.loads(msg.data)
            # Just started, the voters may still be electing (a split vote costs an
            # election timeout, 1.5-3 s): ask again until a leader is named (bounded).
            deadline = time.monotonic() + 20
            while body["leader"] is None and time.monotonic() < deadline:
                time.sleep(0.5)
                msg = send(loop, nc, req, env, retry_unavailable=10)
                check(msg, req)
                body = json.loads(msg.data)
            assert body["leader"] in body["voters"], body
            if mesh.own:
                assert len(body["voters"]) == len(mesh.nodes), body
        if req.payload == "C:nodes":
            body = json.loads(msg.data)
            assert all(n["role"] == "voter" for n in body["nodes"]), body


def test_register_name(loop, nc, login):
    reqs, _ = parse_script("register-name.sh")
    name = f"pytest{secrets.token_hex(4)}.mcom"
    env = dict(login, NAME=name, NAME2=f"pyfqmn{secrets.token_hex(4)}.mcom", TARGET="I:whoami")

    for req in reqs:
        msg = send(loop, nc, req, env, retry_unavailable=15)
        check(msg, req)
        if req.subject == "cmesh.rpc":
            result = rpc_result(msg, req)
            method = json.loads(req.render(env)[1])["method"]
            if method == "registrar.resolve":
                assert result.get("target") == "I:whoami", result
                assert str(result.get("owner", "")).lower() == login["ADDRESS"], result
            if method == "registrar.list":
                assert name in json.dumps(result), f"registrar.list does not show {name}: {result}"
        elif req.payload.startswith("R:"):
            # The name's target is I:whoami: calling the name answers who we are.
            assert contains_address(msg, login["ADDRESS"]), msg.data


def test_apps(loop, nc, mesh, login):
    """apps.sh: deploy the greeter, create a context (the script reads its id from the
    ctx.create reply with jq; here a 12-digit prefix of it is used, which must work too),
    call it by FQMN as a transaction, a view and version-pinned, and read its root."""
    import base64

    reqs, _ = parse_script("apps.sh")
    wasm = base64.b64encode((ROOT / "apps" / "greeter" / "greeter.wasm").read_bytes()).decode()
    if not mesh.nodes:
        pytest.skip("apps.sh talks to one node: set CMESH_TEST_NODE")
    env = dict(login, WASM=wasm, NODE=mesh.nodes[0])
    for req in reqs:
        msg = send(loop, nc, req, env)
        check(msg, req)
        body = json.loads(msg.data)
        if "app.deploy" in req.payload:
            assert body["result"]["version"] == "4.1.3", body
        elif "ctx.create" in req.payload:
            env["CONTEXT"] = body["result"]["context"][:12]
        elif req.payload.startswith("SW:"):
            assert body["result"] == "Hello, Dexter!" and body["tx"].startswith("0x"), body
        elif ":greetings:" in req.payload:
            assert body["result"] == 1, body
        elif "ctx.root" in req.payload:
            assert body["result"]["applied"] == 2, body  # the genesis and the one SW: call
    assert "CONTEXT" in env, "apps.sh creates a context"


def test_events(loop, nc, login):
    reqs, subs = parse_script("events.sh")
    assert subs, "events.sh subscribes to the events"
    got: list = []

    async def on_event(msg):
        got.append(msg)

    subs_ = [loop.run_until_complete(nc.subscribe(s, cb=on_event)) for s in subs]
    env = dict(login, TOPIC=f"pytest{secrets.token_hex(3)}")
    for req in reqs:
        check(send(loop, nc, req, env), req)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        loop.run_until_complete(asyncio.sleep(0.1))
    for s in subs_:
        loop.run_until_complete(s.unsubscribe())
    assert got, f"no event on {subs} after the requests of events.sh"
    assert all(m.subject.startswith("cmesh.events.") for m in got)


def test_micro(loop, nc, mesh):
    reqs, _ = parse_script("micro.sh")
    types = {"PING": "ping_response", "INFO": "info_response", "STATS": "stats_response"}
    for req in reqs:
        verb = req.subject.split(".")[1]
        msg = send(loop, nc, req, {})
        body = json.loads(msg.data)
        assert body.get("type") == f"io.nats.micro.v1.{types[verb]}", body
        assert body.get("name") == "cmesh", body
        assert body.get("id") and body.get("version"), body
        if verb == "INFO":
            assert body.get("endpoints"), f"no endpoints in $SRV.INFO: {body}"
        if verb == "STATS":
            assert body.get("endpoints"), f"no endpoints in $SRV.STATS: {body}"

    if mesh.own:
        # Every node answers a ping: as many replies as nodes.
        ping = find(reqs, "$SRV.PING")
        subject, payload, _ = ping.render({})

        async def gather():
            inbox = nc.new_inbox()
            replies = []

            async def on_reply(m):
                replies.append(m)

            sub = await nc.subscribe(inbox, cb=on_reply)
            await nc.publish(subject, payload, reply=inbox)
            await asyncio.sleep(1.5)
            await sub.unsubscribe()
            return replies

        replies = loop.run_until_complete(gather())
        ids = {json.loads(m.data)["id"] for m in replies}
        assert len(ids) == len(mesh.nodes), f"{len(ids)} micro instances answered, {len(mesh.nodes)} nodes run"
