"""``masksep submit``: a sweep's driver as a Ray job on a cluster.

The driver runs on the cluster as a Ray job, through the job API that
``ray job submit`` uses: the project folder is the job's working_dir, its pip
dependencies the job's runtime_env, and ``python -m masksep sweep`` the
entrypoint. The logs are followed until the job ends.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masksep.errors import UserError
from masksep.sweep import spec as spec_mod
from masksep.sweep.spec import SweepSpec

# Never uploaded with the project: environments, VCS data, local results and
# checkpoints. The project's .gitignore applies too (Ray reads it).
UPLOAD_EXCLUDES = [
    ".venv", "venv", ".git", "runs", "wandb", "__pycache__", "*.pyc", "*.egg-info",
    ".pytest_cache", ".ruff_cache", "results/*/ray", "results/*/wandb", "*.pt",
]
JOB_SPEC_DIR = ".masksep-jobs"  # in the job's working_dir, on the head
CONNECT_TIMEOUT_S = 10.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def project_root() -> Path:
    """The source checkout masksep runs from: what a job uploads as working_dir."""
    root = Path(__file__).resolve().parents[2]
    if not ((root / "pyproject.toml").is_file() and (root / "masksep").is_dir()):
        raise UserError(f"masksep submit uploads the project folder, but masksep runs from "
                        f"{root}, not a source checkout; run it from a clone (pip install -e .)")
    return root


def pip_requirements(root: Path) -> list[str]:
    """The project's dependencies from pyproject.toml, less Ray: a job must use
    the cluster's own Ray (a second one in the job's virtualenv breaks it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from importlib import metadata

        deps = [r for r in metadata.requires("masksep") or [] if "extra ==" not in r]
    else:
        with open(root / "pyproject.toml", "rb") as f:
            deps = list(tomllib.load(f)["project"]["dependencies"])
    return [d for d in deps if _requirement_name(d) != "ray"]


def _requirement_name(requirement: str) -> str:
    name = requirement.strip()
    for stop in "[<>=!~; ":
        name = name.split(stop, 1)[0]
    return name.lower().replace("_", "-")


def job_entrypoint(spec: SweepSpec, out: str, submission_id: str, *, resume: bool = False,
                   use_wandb: bool = True, storage_path: str | None = None) -> tuple[str, str]:
    """(entrypoint, what to show): the shell command writes the self-contained
    spec into the job's working_dir, then runs ``python -m masksep sweep`` on it
    (``-m`` imports the uploaded masksep, whatever the cluster has installed)."""
    spec_file = f"{JOB_SPEC_DIR}/{submission_id}.yaml"
    command = ["python", "-m", "masksep", "sweep", spec_file, "--out", out]
    if resume:
        command.append("--resume")
    if not use_wandb:
        command.append("--no-wandb")
    if storage_path:
        command += ["--storage-path", storage_path]
    text = spec_mod.self_contained_yaml(spec)
    tag = "MASKSEP_SPEC_" + uuid.uuid4().hex[:8].upper()
    shown = shlex.join(command)
    entrypoint = (f"mkdir -p {JOB_SPEC_DIR} && cat > {shlex.quote(spec_file)} << '{tag}'\n"
                  f"{text.rstrip()}\n{tag}\n{shown}")
    return entrypoint, shown


def dashboard_url(address: str) -> str:
    """``HOST:PORT`` means the dashboard here (Ray would read it as a GCS address
    and look the dashboard up, which can hang on a wrong port)."""
    return address if "://" in address else f"http://{address}"


def resolve_address(address: str | None) -> tuple[str, str]:
    """(the dashboard's URL, where it was given), in the order `ray job submit`
    reads them: --address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS. A
    RAY_ADDRESS that is a cluster's address (GCS ``HOST:PORT`` or ``ray://``, as
    ``masksep sweep`` takes it) is looked up on the cluster, as Ray does."""
    for where, value in (("--address", address),
                         ("RAY_API_SERVER_ADDRESS", os.environ.get("RAY_API_SERVER_ADDRESS")),
                         ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"))):
        if not value:
            continue
        if where != "RAY_ADDRESS" or value.startswith(("http://", "https://")):
            return dashboard_url(value), where
        from masksep.sweep import ray_compat

        _check_port(value.split("://", 1)[-1], f"{where} {value}")
        try:
            return ray_compat.dashboard_of(value), where
        except Exception as exc:  # noqa: BLE001 - Ray raises many types; one line for the user
            raise UserError(f"{where} {value}: cannot find the cluster's dashboard there "
                            f"({_explain(exc)}); give --address http://HEAD:8265") from None
    raise UserError("--address: give the Ray dashboard's address, e.g. http://HEAD:8265 "
                    "(or set RAY_API_SERVER_ADDRESS or RAY_ADDRESS, as for `ray job submit`)")


def _is_loopback(host: str) -> bool:
    """Every address ``host`` names is a loopback one (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return host == "localhost"
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def clear_token_warning(url: str, where: str = "--address") -> str | None:
    """The one-line warning for a Ray auth token that would cross the network
    unencrypted (token authentication on, plain http:// to another host); None if not."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token" or parts.scheme != "http":
        return None
    if not parts.hostname or _is_loopback(parts.hostname):
        return None
    return (f"masksep: warning: {where} {url}: RAY_AUTH_MODE=token sends the cluster's auth token "
            f"over plain http, in the clear, to {parts.hostname}; use https:// or an SSH tunnel "
            f"to a 127.0.0.1 port (cluster/README.md)")


def _check_port(hostport: str, label: str) -> None:
    """A TCP connection to ``HOST:PORT`` (before Ray, which retries a dead port for long)."""
    host, _, port = hostport.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{label}: expected HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except socket.gaierror:
        raise UserError(f"{label}: cannot resolve the host name {host!r}") from None
    except OSError as exc:
        raise UserError(f"{label}: cannot reach {host}:{port} ({exc.strerror or exc})") from None


def _check_reachable(url: str, source: str = "--address") -> None:
    """Fail fast and clearly (the job client has no timeouts): resolve the host,
    connect, and ask for /api/version, which a Ray dashboard answers (or
    refuses with 401/403 when it wants a token the job client then sends)."""
    from urllib.parse import urlsplit

    import requests

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return  # ray://, anyscale:// ...: left to Ray
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"{source} {url}: not a valid port") from None
    where = f"{parts.hostname}:{port}"
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except socket.gaierror:
        raise UserError(f"{source} {url}: cannot resolve the host name {parts.hostname!r}") from None
    except ConnectionRefusedError:
        raise UserError(f"{source} {url}: connection refused at {where} (is the Ray "
                        f"dashboard running there? ray start --head serves it on port 8265)") from None
    except TimeoutError:
        raise UserError(f"{source} {url}: no answer from {where} within "
                        f"{CONNECT_TIMEOUT_S:g} s (head down, or a firewall?)") from None
    except OSError as exc:
        raise UserError(f"{source} {url}: cannot reach {where} ({exc.strerror or exc})") from None
    not_dashboard = (f"{source} {url}: {where} answers, but not as a Ray dashboard "
                     f"(the dashboard's port is 8265 unless --dashboard-port says otherwise)")
    try:
        reply = requests.get(f"{url.rstrip('/')}/api/version", timeout=CONNECT_TIMEOUT_S)
    except requests.RequestException:
        raise UserError(not_dashboard) from None
    if reply.status_code in (401, 403):
        return
    try:
        ok = reply.status_code == 200 and "ray_version" in reply.json()
    except ValueError:
        ok = False
    if not ok:
        raise UserError(not_dashboard)


def _token_hint() -> str:
    return ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (cluster/README.md)")


def _explain(exc: BaseException) -> str:
    """One line for a job-API failure: token problems first, then the root cause."""
    from ray.exceptions import AuthenticationError

    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, AuthenticationError):
            text = str(e)
            if "Authentication required" in text or "401" in text:
                return f"the cluster needs a Ray auth token and got none (401): {_token_hint()}"
            return f"the cluster refused the Ray auth token (403): {_token_hint()}"
        if isinstance(e, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused (is the Ray dashboard running there?)"
        todo += [c for c in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                 if isinstance(c, BaseException)]
    lines = str(exc).strip().splitlines()
    return (lines[0][:200] if lines else type(exc).__name__).rstrip(".")


def _job_client(url: str, where: str = "--address"):
    from ray.job_submission import JobSubmissionClient

    _check_reachable(url, where)
    # Ray's client takes RAY_API_SERVER_ADDRESS (else RAY_ADDRESS) over the address it
    # is given; set it to the one resolved here, so that what was checked is what is used.
    saved = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types; one line for the user
        raise UserError(f"{where} {url}: {_explain(exc)}") from None
    finally:
        if saved is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = saved


def _status(client, submission_id: str):
    info = client.get_job_info(submission_id)
    return str(info.status), info.message


async def _follow_logs(client, submission_id: str) -> None:
    async for chunk in client.tail_job_logs(submission_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


@dataclass
class Job:
    submission_id: str
    entrypoint: str
    shown: str  # the sweep command, without the spec it carries
    runtime_env: dict[str, Any]
    metadata: dict[str, str]


def prepare_job(
    spec_path: str | Path,
    out: str,
    *,
    storage_path: str | None = None,
    resume: bool = False,
    use_wandb: bool = True,
    pip: bool = True,
    forward_wandb_key: bool = False,
    env: list[str] | tuple = (),
) -> Job:
    """Everything ``masksep submit`` sends, checked before anything is sent."""
    spec = spec_mod.load_spec(spec_path)  # a bad spec fails here, not on the cluster
    if not os.path.isabs(out):
        raise UserError(f"--out {out}: give an absolute path on the head node (a relative one "
                        f"would land in the job's temporary working directory)")
    if storage_path and "://" not in storage_path and not os.path.isabs(storage_path):
        raise UserError(f"--storage-path {storage_path}: give a URI (s3://, gs://) or an "
                        f"absolute path that every node sees")
    env_vars = {"PYTHONUNBUFFERED": "1"}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--env {item}: expected KEY=VALUE")
        if key == "WANDB_API_KEY":
            raise UserError("--env WANDB_API_KEY: use --forward-wandb-key (and read its help first)")
        env_vars[key] = value
    if forward_wandb_key:
        key = os.environ.get("WANDB_API_KEY", "")
        if not key:
            raise UserError("--forward-wandb-key: WANDB_API_KEY is not set in this shell")
        env_vars["WANDB_API_KEY"] = key

    root = project_root()
    runtime_env: dict[str, Any] = {"working_dir": str(root), "excludes": list(UPLOAD_EXCLUDES),
                                   "env_vars": env_vars}
    if pip:
        runtime_env["pip"] = pip_requirements(root)
    submission_id = f"masksep-{spec.name}-{uuid.uuid4().hex[:8]}"
    entrypoint, shown = job_entrypoint(spec, out, submission_id, resume=resume,
                                       use_wandb=use_wandb, storage_path=storage_path)
    return Job(submission_id, entrypoint, shown, runtime_env,
               metadata={"masksep_sweep": spec.name, "out": out})


def submit(spec_path: str | Path, address: str | None, out: str, *, wait: bool = True,
           **job_options: Any) -> int:
    """Submit ``masksep sweep`` as a Ray job and follow its logs (unless ``wait``
    is False). Returns the exit code: 0 SUCCEEDED (or submitted, with no wait),
    1 FAILED or STOPPED. ``job_options`` go to :func:`prepare_job`."""
    job = prepare_job(spec_path, out, **job_options)
    address, where = resolve_address(address)
    warning = clear_token_warning(address, where)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    client = _job_client(address, where)
    try:
        client.submit_job(entrypoint=job.entrypoint, runtime_env=job.runtime_env,
                          submission_id=job.submission_id, metadata=job.metadata)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{where} {address}: the job was not submitted ({_explain(exc)})") from None
    sid, err = job.submission_id, sys.stderr
    print(f"masksep: submitted job {sid} to {address}: {job.shown}", file=err, flush=True)
    stop = f"ray job stop --address {address} {sid}"
    if not wait:
        print(f"masksep: follow it with: ray job logs --address {address} --follow {sid}", file=err)
        print(f"masksep: stop it with: {stop}", file=err)
        print(sid)
        return 0

    try:
        asyncio.run(_follow_logs(client, sid))
        status, message = _status(client, sid)
        deadline = time.monotonic() + 60  # the log stream may close just before the status flips
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(1.0)
            status, message = _status(client, sid)
    except KeyboardInterrupt:
        print(f"\nmasksep: stopped following; the job goes on. Stop it with: {stop}", file=err)
        return 130
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{where} {address}: lost the job {sid} ({_explain(exc)}); "
                        f"it may still run: ray job status --address {address} {sid}") from None
    if status == "SUCCEEDED":
        print(f"masksep: job {sid} SUCCEEDED", file=err)
        return 0
    why = f": {' '.join(str(message).split())[:300]}" if message else ""
    print(f"masksep: job {sid} {status}{why}", file=err)
    return 1
