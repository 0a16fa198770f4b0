"""masksep submit's address (issue 34, item 8): RAY_ADDRESS honoured as `ray job submit`
does, the address checked is the one Ray's client uses, and a token that would cross
the network in plain http is warned about in one line."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from masksep.errors import UserError
from masksep.sweep import submit as C

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_address() -> str | None:
    """A non-loopback address of this machine (the one a default route leaves by), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


@pytest.fixture
def env(monkeypatch):
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_the_address_comes_from_the_flag_then_ray_api_server_address_then_ray_address(env):
    with pytest.raises(UserError, match="RAY_API_SERVER_ADDRESS or RAY_ADDRESS"):
        C.resolve_address(None)
    env.setenv("RAY_ADDRESS", "http://a.example:8265")
    assert C.resolve_address(None) == ("http://a.example:8265", "RAY_ADDRESS")
    env.setenv("RAY_API_SERVER_ADDRESS", "b.example:8265")
    assert C.resolve_address(None) == ("http://b.example:8265", "RAY_API_SERVER_ADDRESS")
    assert C.resolve_address("c.example:8265") == ("http://c.example:8265", "--address")
    # A cluster address in RAY_ADDRESS is the cluster's, not a dashboard: Ray looks the
    # dashboard up there; where nothing listens that is one line naming RAY_ADDRESS.
    env.delenv("RAY_API_SERVER_ADDRESS")
    env.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    with pytest.raises(UserError, match=r"^RAY_ADDRESS 127\.0\.0\.1:\d+: cannot reach"):
        C.resolve_address(None)


@pytest.mark.parametrize("url, auth, warned", [
    ("http://192.0.2.7:8265", "token", True),
    ("http://192.0.2.7:8265", "TOKEN", True),
    ("https://192.0.2.7:8265", "token", False),  # TLS: not in the clear
    ("http://127.0.0.1:8265", "token", False),  # loopback, e.g. an SSH tunnel
    ("http://localhost:8265", "token", False),
    ("http://[::1]:8265", "token", False),
    ("http://192.0.2.7:8265", None, False),  # no token is sent
    ("http://192.0.2.7:8265", "disabled", False),
])
def test_a_token_in_the_clear_to_another_host_is_warned_about(env, url, auth, warned):
    if auth is not None:
        env.setenv("RAY_AUTH_MODE", auth)
    line = C.clear_token_warning(url, "--address")
    assert (line is not None) == warned
    if warned:
        assert line.startswith(f"masksep: warning: --address {url}: ") and "in the clear" in line
        assert "\n" not in line


def test_submit_warns_then_names_ray_address_in_its_error(tmp_path):
    ip = own_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to submit to")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "search_space": {"head.kind": {"choice": ["shallow"]}}}))
    url = f"http://{ip}:{free_port()}"  # this machine, another interface; nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_API_SERVER_ADDRESS",)}
    env.update(RAY_ADDRESS=url, RAY_AUTH_MODE="token")
    done = subprocess.run([sys.executable, "-m", "masksep", "submit", str(spec), "--out", "/abs/out"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("masksep:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[0].startswith(f"masksep: warning: RAY_ADDRESS {url}: ") and "in the clear" in lines[0]
    assert lines[1].startswith(f"masksep: error: RAY_ADDRESS {url}: ")


class FakeDashboard(http.server.BaseHTTPRequestHandler):
    """Answers /api/version as a Ray dashboard does; records the paths it was asked for."""

    asked: list[str] = []

    def do_GET(self):
        FakeDashboard.asked.append(self.path)
        body = json.dumps({"ray_version": "2.60.0", "version": "4", "session_name": "x"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_client_uses_the_address_that_was_checked_whatever_the_environment_says(env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeDashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        # Ray's client prefers these to the address it is handed; neither is reachable.
        env.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{free_port()}")
        env.setenv("RAY_ADDRESS", f"http://127.0.0.1:{free_port()}")
        client = C._job_client(url, "--address")
        assert client.get_address() == url
        assert os.environ["RAY_API_SERVER_ADDRESS"] != url  # the environment is given back
    finally:
        server.shutdown()
    assert "/api/version" in FakeDashboard.asked
