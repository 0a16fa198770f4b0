"""The files under cluster/: the launcher configs through Ray's own validation,
the KubeRay manifest against the KubeRay and Kubernetes field names in
tests/data/kuberay_fields.txt, the SLURM script under bash with SLURM's
commands stubbed (no SLURM here), and the README against what it documents."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER_CONFIGS = ("aws.yaml", "gcp.yaml")
KUBERAY = CLUSTER / "kuberay-rayjob.yaml"
SLURM = CLUSTER / "slurm.sbatch"
README = CLUSTER / "README.md"
FIELDS = ROOT / "tests" / "data" / "kuberay_fields.txt"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


def _torch_pin() -> str:
    """The torch pin of the Makefile (TORCH_SPEC), which every node install must share."""
    match = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile: no TORCH_SPEC ?= torch==X line"
    return match.group(1)


# --------------------------------------------------------------------------- all YAML


def test_every_yaml_under_cluster_parses():
    files = sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("*.yml")])
    assert {"aws.yaml", "gcp.yaml", "kuberay-rayjob.yaml"} <= {f.name for f in files}
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs, f"{path.name}: no YAML document"
        assert all(isinstance(doc, dict) and doc for doc in docs), f"{path.name}: a document is not a mapping"


# --------------------------------------------------------------------------- cluster launcher


def _launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _launcher(name)
    # The file as written (the schema forbids unknown top-level and node-type keys)...
    jsonschema.validate(raw, json.loads(RAY_SCHEMA.read_text()))
    # ...and after `ray up`'s own steps: provider defaults merged, then checked
    # (head_node_type among the node types, min_workers within max_workers).
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["provider"]["type"] == name.removesuffix(".yaml")


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
@pytest.mark.parametrize("mutate", [
    lambda c: c.update(worker_start_commands=c["worker_start_ray_commands"]),  # misspelt key
    lambda c: c["available_node_types"]["head"].update(min_worker=0),  # misspelt node-type key
    lambda c: c["available_node_types"]["gpu-1x"]["resources"].update(GPU=0.5),  # not an integer
], ids=["top-level-key", "node-type-key", "fractional-resource"])
def test_launcher_validation_rejects_a_broken_config(name, mutate):
    """The check above is not vacuous: the same schema refuses a broken copy."""
    config = _launcher(name)
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_head_takes_no_trials_and_workers_have_gpus(name):
    config = _launcher(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # nothing schedulable: trials avoid the head
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert workers
    for type_name, node in workers.items():
        assert node["resources"].get("GPU", 0) >= 1, type_name
        assert node.get("min_workers", 0) == 0, f"{type_name}: idle GPU nodes cost money"
        assert 1 <= node["max_workers"] <= config["max_workers"], type_name
    assert any(node["resources"]["GPU"] >= 4 for node in workers.values()), "no multi-GPU type for DDP trials"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_token_auth_secrets_and_pins(name):
    config = _launcher(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=token" in start, key
        assert "ray start" in start, key
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--head" in head_start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    mounts = config["file_mounts"]
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token file, never in the repo
    assert "~/.masksep/wandb_api_key" in mounts
    assert "." in mounts.values()  # the repository
    setup = " ".join(config["setup_commands"])
    assert f'"torch=={_torch_pin()}"' in setup, "torch pin differs from the Makefile's TORCH_SPEC"
    assert f'"ray[default,tune]=={ray.__version__}"' in setup, "nodes must run the client's Ray"
    assert "pip install -q -e ~/masksep-src" in setup
    assert not re.search(r"WANDB_API_KEY=[\"']?\w{12,}", (CLUSTER / name).read_text())


# --------------------------------------------------------------------------- KubeRay

ROOT_TYPES = {"RayJob": "ray.io/v1", "PersistentVolumeClaim": "v1"}


def load_fields(path: Path = FIELDS) -> dict[str, dict[str, str]]:
    """TYPE -> field -> KIND ('' scalar, 'map', 'TYPE' or '[]TYPE')."""
    fields: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, kind = line.partition(" ")
        type_name, field = name.split(".")
        fields.setdefault(type_name, {})[field] = kind.strip()
    return fields


def unknown_fields(value, kind: str, where: str, fields: dict) -> list[str]:
    """Every key path under ``value`` that type ``kind`` does not have."""
    if kind == "map":
        return [] if isinstance(value, dict) else [f"{where}: expected a mapping"]
    if kind.startswith("[]"):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, item in enumerate(value) for e in unknown_fields(item, kind[2:], f"{where}[{i}]", fields)]
    if not kind:
        nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))
        return [f"{where}: a scalar field holds a mapping or nested list"] if nested else []
    if kind not in fields:
        return [f"{where}: type {kind} has no fields in {FIELDS.name}"]
    if not isinstance(value, dict):
        return [f"{where}: expected a {kind} mapping"]
    errors = []
    for key, item in value.items():
        if key not in fields[kind]:
            errors.append(f"{where}.{key}: {kind} has no field {key!r}")
        else:
            errors.extend(unknown_fields(item, fields[kind][key], f"{where}.{key}", fields))
    return errors


def _kuberay_docs() -> dict[str, dict]:
    docs = list(yaml.safe_load_all(KUBERAY.read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one document per kind"
    return by_kind


def test_kuberay_fields_whitelist_is_well_formed():
    fields = load_fields()
    for type_name in ("RayJob", "RayJobSpec", "RayClusterSpec", "HeadGroupSpec", "WorkerGroupSpec",
                      "AuthOptions", "PodSpec", "Container", "PersistentVolumeClaim"):
        assert type_name in fields, type_name
    for type_name, members in fields.items():
        for field, kind in members.items():
            assert re.fullmatch(r"(|map|(\[\])?[A-Z]\w*)", kind), f"{type_name}.{field}: bad kind {kind!r}"


def test_kuberay_manifest_uses_only_real_fields():
    fields = load_fields()
    docs = _kuberay_docs()
    assert set(docs) == set(ROOT_TYPES)
    errors = []
    for kind, doc in docs.items():
        assert doc["apiVersion"] == ROOT_TYPES[kind], kind
        errors += unknown_fields(doc, kind, kind, fields)
    assert not errors, "\n".join(errors)


def _job() -> dict:
    return _kuberay_docs()["RayJob"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda j: j["spec"].update(shutdownAfterJobFinish=True), "RayJob.spec.shutdownAfterJobFinish"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
        envs=[]), "containers[0].envs"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplica=0),
     "workerGroupSpecs[0].minReplica"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].update(
        affinity={"nodeAffinity": {}}), "type Affinity has no fields"),
], ids=["rayjob-spec", "container", "worker-group", "undescribed-type"])
def test_kuberay_check_catches_a_wrong_field(mutate, expected):
    job = copy.deepcopy(_job())
    mutate(job)
    errors = unknown_fields(job, "RayJob", "RayJob", load_fields())
    assert any(expected in e for e in errors), errors


def test_kuberay_free_form_maps_take_any_key():
    job = copy.deepcopy(_job())
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["object-store-memory"] = "1000000000"
    job["metadata"]["labels"]["team"] = "speech"
    assert unknown_fields(job, "RayJob", "RayJob", load_fields()) == []


def _ray_containers(job: dict) -> list[tuple[str, dict]]:
    cluster = job["spec"]["rayClusterSpec"]
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, c) for name, group in groups for c in group["template"]["spec"]["containers"]]


def test_kuberay_job_runs_the_paper_sweep_and_cleans_up():
    spec = _job()["spec"]
    assert re.fullmatch(r"masksep sweep \S*sweeps/paper\.yaml --out /mnt/results/\S+", spec["entrypoint"])
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # trials avoid the head
    assert cluster["enableInTreeAutoscaling"] is True


def test_kuberay_gpu_workers_secrets_and_shared_volume():
    docs = _kuberay_docs()
    claim = docs["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod mounts it
    job = docs["RayJob"]
    images = set()
    for name, container in _ray_containers(job):
        images.add(container["image"])
        gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
        assert (gpus == 0) if name == "head" else (gpus >= 1), f"{name}: nvidia.com/gpu {gpus}"
        env = {e["name"]: e for e in container["env"]}
        wandb = env["WANDB_API_KEY"]
        assert "value" not in wandb and wandb["valueFrom"]["secretKeyRef"]["name"], name
        assert env["MASKSEP_DATA"]["value"] == "/mnt/data"
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/mnt/data", "/mnt/results"}, name
    assert len(images) == 1, "head and workers must run one image"
    cluster = job["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        claims = [v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [claim["metadata"]["name"]]
    assert max(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for _, c in _ray_containers(job)) >= 4


# --------------------------------------------------------------------------- SLURM


def test_slurm_script_is_valid_bash_with_the_directives():
    subprocess.run(["bash", "-n", str(SLURM)], check=True, capture_output=True)
    text = SLURM.read_text()
    for directive in ("--nodes=", "--gpus-per-node=", "--cpus-per-task=", "--time=", "--output=", "--exclusive"):
        assert re.search(rf"^#SBATCH {directive}", text, re.M), directive
    assert "masksep sweep" in text and "sweeps/paper.yaml" in text


STUBS = {
    # Two nodes; srun logs itself, drops its own options and runs the command.
    "scontrol": 'printf "node-a\\nnode-b\\n"',
    "srun": """echo "srun $*" >> "$STUB_LOG"
args=("$@"); i=0
while ((i < ${#args[@]})); do
    case ${args[$i]} in -w) i=$((i + 2)) ;; -*) i=$((i + 1)) ;; *) break ;; esac
done
exec "${args[@]:$i}\"""",
    "hostname": 'echo "10.9.8.7 fe80::1"',
    "ray": 'echo "ray $*" >> "$STUB_LOG"',
    "python": 'cat > /dev/null; echo "python $*" >> "$STUB_LOG"',
    "masksep": 'echo "masksep $*" >> "$STUB_LOG"; exit "${STUB_MASKSEP_RC:-0}"',
    "sleep": "true",
}


def _run_slurm(tmp_path: Path, token: bool = True, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text("")
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    if token:
        (home / ".ray" / "auth_token").write_text("not-a-real-token")
    log = tmp_path / "calls.log"
    log.touch()
    base = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "STUB_LOG": str(log),
        "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_GPUS_PER_NODE": "a100:4", "SLURM_CPUS_PER_TASK": "8",
        "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(ROOT), "MASKSEP_VENV": str(tmp_path / "venv"),
        "MASKSEP_DATA": str(tmp_path / "data"), "RESULTS": str(tmp_path / "results"),
    }
    proc = subprocess.run(["bash", str(SLURM)], env={**base, **env}, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    return proc, log.read_text().splitlines()


def test_slurm_script_starts_ray_runs_the_sweep_and_stops_ray(tmp_path):
    proc, calls = _run_slurm(tmp_path)
    assert proc.returncode == 0, proc.stderr
    address = "10.9.8.7:24242"  # head IP, port 20000 + job id % 10000
    head = "ray start --head --node-ip-address=10.9.8.7 --port=24242 --num-cpus=8 --num-gpus=4 --block"
    worker = f"ray start --address={address} --num-cpus=8 --num-gpus=4 --block"
    sweep = f"masksep sweep {ROOT}/sweeps/paper.yaml --out {tmp_path / 'results'} --address {address}"
    for line in (head, worker, f"python - {address} 2", sweep, "ray stop --force"):
        assert line in calls, f"missing {line!r} in {calls}"
    srun_head = next(c for c in calls if c.startswith("srun") and "--head" in c)
    assert "-w node-a" in srun_head and "--gpus-per-task=4" in srun_head
    srun_workers = next(c for c in calls if c.startswith("srun") and f"--address={address}" in c)
    assert "--exclude=node-a" in srun_workers and "--nodes=1" in srun_workers
    srun_stop = next(c for c in calls if c.startswith("srun") and "ray stop" in c)
    assert "--nodes=2" in srun_stop and "--ntasks-per-node=1" in srun_stop  # all of its nodes, one each
    # The Ray starts run in the background (in any order); the wait, the sweep
    # and the stop run in the script, one after the other.
    order = [calls.index(line) for line in (f"python - {address} 2", sweep, "ray stop --force")]
    assert order == sorted(order)


def test_slurm_script_resumes_and_cleans_up_after_a_failed_sweep(tmp_path):
    proc, calls = _run_slurm(tmp_path, RESUME="1", STUB_MASKSEP_RC="3")
    assert proc.returncode == 3
    sweeps = [c for c in calls if c.startswith("masksep sweep")]
    assert len(sweeps) == 1 and sweeps[0].endswith(" --resume")
    assert "ray stop --force" in calls[calls.index(sweeps[0]):]


def test_slurm_script_refuses_to_start_without_a_token(tmp_path):
    proc, calls = _run_slurm(tmp_path, token=False)
    assert proc.returncode == 2
    assert "ray get-auth-token --generate" in proc.stderr
    assert not any("ray start" in c for c in calls)


# --------------------------------------------------------------------------- README and pins

DOCUMENTED = (
    # cluster launcher
    "ray up", "ray attach", "ray submit", "ray exec", "ray dashboard", "ray job submit", "ray job logs",
    "ray rsync-down", "ray down", "masksep submit",
    # KubeRay
    "kubectl apply -f cluster/kuberay-rayjob.yaml", "kubectl logs", "kubectl delete rayjob",
    "kubectl create secret generic masksep-ray-auth", "kubectl create secret generic masksep-wandb",
    # SLURM
    "sbatch cluster/slurm.sbatch", "squeue", "scancel",
    # all
    "masksep sweep", "masksep report", "--resume", "ray get-auth-token --generate", "RAY_AUTH_MODE=token",
    "storage_path", "--storage-path", "s3://", "gs://", "WANDB_API_KEY", "FailureConfig", "max_failures",
    "see `sweeps/paper.yaml`",
)


@pytest.mark.parametrize("command", DOCUMENTED)
def test_readme_documents(command):
    assert command in README.read_text()


def test_readme_names_only_files_that_exist():
    named = set(re.findall(r"\b((?:cluster|tests)/[\w./-]+\.(?:yaml|sbatch|md|py|txt))", README.read_text()))
    assert {"cluster/aws.yaml", "cluster/gcp.yaml", "cluster/kuberay-rayjob.yaml", "cluster/slurm.sbatch"} <= named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_pins_agree_across_cluster_files():
    """One torch (the Makefile's) and one Ray (the client's) everywhere a node is built."""
    readme = README.read_text()
    assert f'"torch=={_torch_pin()}"' in readme  # the KubeRay image
    assert f"FROM rayproject/ray:{ray.__version__}-" in readme
    for name in LAUNCHER_CONFIGS:
        text = (CLUSTER / name).read_text()
        assert set(re.findall(r"torch==([\w.+-]+)", text)) == {_torch_pin()}, name
        assert set(re.findall(r"ray\[default,tune\]==([\w.]+)", text)) == {ray.__version__}, name


def test_no_secret_values_in_cluster_files():
    for path in CLUSTER.iterdir():
        text = path.read_text()
        assert not re.search(r"(WANDB_API_KEY|RAY_AUTH_TOKEN|auth_token|api-key)\s*[:=]\s*[\"']?[0-9a-f]{24,}", text), path.name
