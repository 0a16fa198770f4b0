"""A private multi-node Ray cluster on 127.0.0.1 for tests.

Every node is a real ``ray start`` (a head with token authentication and the
dashboard, then worker nodes joining it) with ports picked free by the test and
its own short ``--temp-dir`` (Unix socket paths must stay under ~100
characters). Nothing here touches another Ray on the machine: there is no
``ray stop`` (it stops every Ray of the user). Each ``ray start`` runs in a new
session, so the daemons it leaves behind share its process group; the workers
that the raylets spawn (in sessions of their own) are found as the daemons'
descendants. Every process seen is recorded with its start time, so the
cleanup kills exactly those, even after they were orphaned (a killed raylet's
workers).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, start time) of a live process, None if gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@dataclass
class Node:
    name: str
    pgid: int  # the `ray start` process: every daemon of the node is in its group
    temp_dir: Path
    resources: dict = field(default_factory=dict)

    def daemons(self) -> list[int]:
        return [pid for pid in _all_pids() if (st := _stat(pid)) and st[1] == self.pgid]

    def raylet_pid(self) -> int:
        for pid in self.daemons():
            argv = _cmdline(pid)
            if argv and argv[0].endswith("/raylet"):
                return pid
        raise RuntimeError(f"node {self.name}: no raylet running")


class LoopbackCluster:
    def __init__(self, num_nodes_hint: int = 3):
        # Short, private, under /tmp: the session's socket paths live below it.
        self.root = Path(tempfile.mkdtemp(prefix="msrc-", dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.token_path = self.root / "token"
        self.token_path.write_text(self.token)
        self.token_path.chmod(0o600)
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # A lost node is declared dead after ~3 s instead of ~30 s.
            "RAY_health_check_initial_delay_ms": "1000",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(key, None)
        self.nodes: list[Node] = []
        self.seen: dict[int, int] = {}  # pid -> start time, of every process of ours
        self.gcs_address = ""
        self.dashboard = ""

    # ----------------------------------------------------------------- nodes

    def _start(self, name: str, args: list[str], num_cpus: float, resources: dict) -> Node:
        temp_dir = self.root / name
        ports = free_ports(6)
        cmd = [
            RAY, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus:g}",
            f"--resources={json.dumps(resources)}", f"--temp-dir={temp_dir}",
            "--disable-usage-stats", "--object-store-memory=80000000", "--log-style=record",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
            f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}",
            *args,
        ]
        log = open(self.root / f"{name}.start.log", "w")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        node = Node(name, proc.pid, temp_dir, dict(resources))
        self.nodes.append(node)
        try:
            rc = proc.wait(timeout=120)
        finally:
            log.close()
            self.remember()
        if rc != 0:
            raise RuntimeError(f"ray start ({name}) failed: {(self.root / f'{name}.start.log').read_text()[-2000:]}")
        return node

    def start_head(self, num_cpus: float = 1, resources: dict | None = None) -> Node:
        gcs, dash, client = free_ports(3)
        self.gcs_address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        node = self._start("head", [
            "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        ], num_cpus, resources or {})
        self.wait_dashboard()
        return node

    def add_node(self, name: str, num_cpus: float = 1, resources: dict | None = None) -> Node:
        return self._start(name, [f"--address={self.gcs_address}"], num_cpus, resources or {})

    def wait_dashboard(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2):
                    return
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "code", None) in (401, 403):  # up, and asking for the token
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dashboard at {self.dashboard} did not come up") from exc
                time.sleep(0.5)

    def wait_for_resource(self, key: str, amount: float, timeout: float = 60) -> None:
        """Until the cluster (as the GCS sees it) has ``amount`` of ``key`` alive."""
        code = (
            "import ray, time, sys\n"
            f"ray.init(address='{self.gcs_address}', logging_level='ERROR', log_to_driver=False)\n"
            f"end = time.time() + {timeout}\n"
            f"while ray.cluster_resources().get('{key}', 0) < {amount}:\n"
            "    if time.time() > end: sys.exit(1)\n"
            "    time.sleep(0.5)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], env=self.env, timeout=timeout + 60,
                              capture_output=True, text=True)
        self.remember()
        if proc.returncode:
            raise RuntimeError(f"resource {key}={amount} never showed up: {proc.stderr[-1500:]}")

    # ----------------------------------------------------------------- processes

    def processes(self) -> set[int]:
        """Our live processes: the nodes' daemons and everything below them."""
        children: dict[int, list[int]] = {}
        groups = {n.pgid for n in self.nodes}
        found: set[int] = set()
        for pid in _all_pids():
            st = _stat(pid)
            if st is None:
                continue
            children.setdefault(st[0], []).append(pid)
            if st[1] in groups:
                found.add(pid)
        todo = list(found)
        while todo:
            for kid in children.get(todo.pop(), []):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
        return found

    def remember(self) -> None:
        for pid in self.processes():
            st = _stat(pid)
            if st is not None:
                self.seen.setdefault(pid, st[2])

    def alive(self) -> list[int]:
        """Recorded processes still running (a pid reused since has another start time)."""
        self.remember()
        return sorted(pid for pid, start in self.seen.items()
                      if (st := _stat(pid)) is not None and st[2] == start)

    def kill_raylet(self, node: Node) -> int:
        self.remember()  # its workers are orphaned once it is gone: know them first
        pid = node.raylet_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> list[int]:
        """Kill every process this cluster started; returns the ones that survived."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            targets = self.alive()
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self.alive()
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
        return left
