"""The README's first command, as a newcomer runs it: `scripts/run.sh`.

Started from a clean state (a database that does not exist yet, empty data
directories) with the fake Anthropic API as the model upstream, it must install,
build and serve a chat that answers: sign up, one message over `/ws` with a plain
WebSocket client, the answer, the shared contract check, then a graceful stop.
Started again without a model key, it must warn at start and end every turn with
an error that names ANTHROPIC_API_KEY, without calling the model.

    python3 -m unittest discover -s scripts -p 'test_*.py'

Needs the fake model API binary (`cargo build -p sandbox --features test-support
--bin fake-anthropic`, which test.sh builds first; FAKE_ANTHROPIC_BIN overrides its
path), PostgreSQL on 127.0.0.1:5432 (RUN_SH_DATABASE_SERVER overrides), `psql` and
Python's `websockets`. The first run builds the release binaries (minutes).
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SH = os.path.join(ROOT, "scripts", "run.sh")
FAKE_BIN = os.environ.get(
    "FAKE_ANTHROPIC_BIN", os.path.join(ROOT, "target", "debug", "fake-anthropic")
)
CONTRACT = os.path.join(os.path.dirname(ROOT), "shared", "contract", "check.py")
DB_SERVER = os.environ.get("RUN_SH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
# A cold release build on 2 cores, plus installs: generous, still bounded.
START_TIMEOUT = float(os.environ.get("RUN_SH_START_TIMEOUT", "2400"))
TURN_TIMEOUT = 180.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    """(status, parsed JSON or text) of one request; never raises on a status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


async def one_turn(url, token, content):
    """Sends one message over /ws as a plain client; the frames up to `done` or `error`."""
    import websockets

    ws_url = url.replace("http://", "ws://", 1) + "/ws"
    frames = []
    async with websockets.connect(
        ws_url, subprotocols=["jarvis", f"bearer.{token}"], origin=url, max_size=None
    ) as ws:
        await ws.send(json.dumps({"type": "message", "content": content}))
        async with asyncio.timeout(TURN_TIMEOUT):
            async for raw in ws:
                frame = json.loads(raw)
                frames.append(frame)
                if frame.get("type") in ("done", "error"):
                    break
    return frames


class RunSh:
    """`scripts/run.sh` started as a child with its own process group and log."""

    def __init__(self, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["bash", RUN_SH],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def tail(self, lines=60):
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_healthy(self, url):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"run.sh exited ({self.proc.returncode}) before serving:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"run.sh did not serve within {START_TIMEOUT} s:\n{self.tail()}")

    def stop(self):
        """SIGTERM (what ctrl-c and service managers send): the router ends cleanly."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()
        return self.proc.returncode


class RunShTest(unittest.TestCase):
    def setUp(self):
        for what, ok, fix in [
            ("the fake model API", os.path.exists(FAKE_BIN),
             "cargo build -p sandbox --features test-support --bin fake-anthropic"),
            ("psql", shutil.which("psql"), "apt-get install postgresql-client"),
        ]:
            if not ok:
                self.fail(f"{what} is missing: {fix}")
        try:
            import websockets  # noqa: F401
        except ImportError:
            self.fail("Python's websockets is missing: scripts/setup-tests.sh installs it")
        # A clean state: directories nobody used and a database that does not exist.
        self.dir = tempfile.mkdtemp(prefix="jarvis-run-sh-")
        os.chmod(self.dir, 0o755)  # the sandbox user reaches its workspace under it
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.database = f"jarvis_run_sh_{uuid.uuid4().hex[:12]}"
        self.addCleanup(self.drop_database)
        self.fake = subprocess.Popen(
            [FAKE_BIN], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        self.addCleanup(self.fake.stdout.close)
        self.addCleanup(self.fake.wait, 10)
        self.addCleanup(self.fake.kill)
        self.fake_url = self.fake.stdout.readline().strip()
        self.assertTrue(self.fake_url.startswith("http://"), self.fake_url)

    def drop_database(self):
        subprocess.run(
            ["psql", f"{DB_SERVER}/postgres", "-q", "-c",
             f'drop database if exists "{self.database}" with (force)'],
            check=False, capture_output=True,
        )

    def env(self, port, **extra):
        env = {
            k: v for k, v in os.environ.items()
            if not (k.startswith("JARVIS_") or k in ("DATABASE_URL", "ANTHROPIC_API_KEY"))
        }
        env.update({
            "DATABASE_URL": f"{DB_SERVER}/{self.database}",
            "JARVIS_LISTEN": f"127.0.0.1:{port}",
            "JARVIS_STORAGE": "file:" + os.path.join(self.dir, "storage"),
            "JARVIS_WORKSPACES_DIR": os.path.join(self.dir, "workspaces"),
            "JARVIS_RUN_DIR": os.path.join(self.dir, "run"),
            "JARVIS_MODEL_UPSTREAM": self.fake_url,
            "RUST_LOG": "info",
        })
        env.update(extra)
        return env

    def start(self, name, **extra):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        run = RunSh(self.env(port, **extra), os.path.join(self.dir, f"{name}.log"))
        self.addCleanup(run.stop)
        return run, url, run.wait_healthy(url)

    def sign_up(self, url, email):
        status, body = http("POST", f"{url}/api/auth/register",
                            {"email": email, "password": "correct horse battery"})
        self.assertEqual(status, 201, body)
        return body["access_token"]

    def test_run_sh_serves_a_chat_that_answers_then_says_when_the_key_is_missing(self):
        run, url, healthy_after = self.start("with-key", ANTHROPIC_API_KEY="sk-ant-run-sh")
        token = self.sign_up(url, "newcomer@example.com")
        status, body = http("POST", f"{self.fake_url}/_fake/replies",
                            {"text": ["Hello from ", "your workspace."]})
        self.assertEqual(status, 200, body)
        frames = asyncio.run(one_turn(url, token, "Say hello"))
        answered_after = time.monotonic() - run.started
        kinds = [f["type"] for f in frames]
        self.assertEqual(frames[-1]["type"], "done", f"{frames}\n{run.tail()}")
        self.assertIn("turn", kinds)
        text = "".join(f["delta"] for f in frames if f["type"] == "text")
        self.assertEqual(text, "Hello from your workspace.")
        # The same router passes the shared interface check (a real turn included).
        if os.path.exists(CONTRACT):
            check = subprocess.run([sys.executable, CONTRACT, url, "--ws"],
                                   capture_output=True, text=True, timeout=300)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(run.stop(), 0, run.tail())
        out = run.output()
        self.assertIn("run.sh: building the router and the sandbox", out)
        self.assertNotIn("ANTHROPIC_API_KEY is not set", out)
        print(f"\nrun.sh: healthy after {healthy_after:.0f} s, "
              f"first answer after {answered_after:.0f} s", file=sys.stderr)

        # Again on the same data, with no key (empty beats a developer's .env).
        run, url, _ = self.start("without-key", ANTHROPIC_API_KEY="")
        token = self.sign_up(url, "second@example.com")
        frames = asyncio.run(one_turn(url, token, "Say hello"))
        errors = [f for f in frames if f["type"] == "error"]
        self.assertEqual(len(errors), 1, frames)
        self.assertIn("ANTHROPIC_API_KEY", errors[0]["message"], errors[0])
        print(f"run.sh without a key: the turn ends with {errors[0]}", file=sys.stderr)
        self.assertFalse([f for f in frames if f["type"] == "text"], frames)
        self.assertEqual(run.stop(), 0, run.tail())
        warning = [l for l in run.output().splitlines() if "ANTHROPIC_API_KEY is not set" in l]
        self.assertTrue(warning, run.tail())
        self.assertIn("WARN", warning[0])


if __name__ == "__main__":
    unittest.main()
