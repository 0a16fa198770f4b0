"""Pack what the lent GPU machine lacks for the GPU check into one carried file.

    python tests/benchmarks/gpu_bundle.py [--python-version 3.12] [--out .gpu]

The device machine (see the device tool's KINDS.md) has Python 3.12 with
PyTorch, numpy, scipy, pandas, pyarrow, pyyaml and matplotlib, but not Ray,
Optuna, W&B or soundfile, and it reaches no package index. This resolves
masksep's sweep dependencies (ray[tune], optuna, soundfile, wandb, at the
versions installed here) for that Python on manylinux x86_64, drops what the
machine already has, downloads the rest, unpacks the wheels into one site
folder without the parts of Ray a local sweep never loads (its Java jars,
RLlib, Serve, the LLM library, the dashboard's web client), and writes
``OUT/site.tar.xz`` and ``OUT/manifest.json``. A run carries OUT and starts with

    tar xJf .gpu/site.tar.xz -C /tmp && export PYTHONPATH=/tmp/site:$PWD

A carried tree may hold 64 MiB in all: the script says how much of that the
bundle and the tracked files take, and exits 2 when they would not fit.

To rehearse it here: build it with ``--python-version 3.11 --out /tmp/gpu311``,
make a Python 3.11 venv with ``torch==2.13.0`` and only the machine's own
packages that the resolution names, unpack the bundle, and run
``gpu_check.py --rehearse`` with that PYTHONPATH.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRY_LIMIT = 64 * 2**20
# What a sweep needs beyond the machine's own packages. W&B too, though the check
# sweeps with --no-wandb: a sweep always builds its (then inert) W&B callback,
# so that a resume can turn W&B on, and Ray's callback refuses to exist without it.
WANTED = ("ray[tune]", "optuna", "soundfile", "wandb")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# Python packages in the machine's image ('cuda'), as the device tool's KINDS.md
# lists them (read there on 2026-11-17); nvidia-* and torch's own come with torch.
DEVICE_HAS = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp
""".split())
# Folders of the unpacked site a local Ray Tune sweep never imports (about 40 MiB).
SLIM = ("ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirement: str) -> str:
    """``requirement`` at the version installed here (the one the tests ran)."""
    name = requirement.split("[")[0]
    return f"{requirement}=={importlib.metadata.version(name)}"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                   check=True)


def target_flags(python_version: str) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def resolve(requirements: list[str], python_version: str, scratch: Path) -> list[tuple[str, str]]:
    """(name, version) of every package the requirements need on the target, at
    the versions installed here where the target has them."""
    here = scratch / "constraints.txt"
    here.write_text("".join(f"{d.metadata['Name']}=={d.version}\n"
                            for d in importlib.metadata.distributions()
                            if normalise(d.metadata["Name"]) not in DEVICE_HAS))
    report = scratch / "report.json"
    pip("install", "--dry-run", "--ignore-installed", "--report", str(report), "-c", str(here),
        *target_flags(python_version), *requirements)
    items = json.loads(report.read_text())["install"]
    return [(item["metadata"]["name"], item["metadata"]["version"]) for item in items]


def unpack(wheel: Path, site: Path) -> None:
    """Install a wheel by unpacking it (what pip does for these), keeping file modes:
    Ray's raylet and GCS server are executables inside the package."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if any(info.filename.startswith(prefix + "/") for prefix in SLIM):
                continue
            path = Path(zf.extract(info, site))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                path.chmod(mode & 0o777)


def tracked_bytes() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12",
                        help="the device machine's Python (3.12; 3.11 to rehearse here)")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args(argv)
    requirements = [pinned(r) for r in WANTED]
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        needed = [(n, v) for n, v in resolve(requirements, args.python_version, scratch)
                  if normalise(n) not in DEVICE_HAS]
        print(f"gpu_bundle: {len(needed)} packages the machine lacks: "
              + ", ".join(f"{n} {v}" for n, v in needed), flush=True)
        wheels = scratch / "wheels"
        pip("download", "--no-deps", "--dest", str(wheels), *target_flags(args.python_version),
            *(f"{n}=={v}" for n, v in needed))
        site = scratch / "site"
        for wheel in sorted(wheels.glob("*.whl")):
            unpack(wheel, site)
        args.out.mkdir(parents=True, exist_ok=True)
        bundle = args.out / "site.tar.xz"
        tmp = bundle.with_name(bundle.name + ".tmp")
        t0 = time.perf_counter()
        with tarfile.open(tmp, "w:xz", preset=6 | lzma.PRESET_EXTREME) as tar:
            tar.add(site, arcname="site")
        tmp.replace(bundle)
        size = bundle.stat().st_size
        manifest = {"python_version": args.python_version, "requirements": requirements,
                    "packages": dict(needed), "left_out": list(SLIM), "bytes": size}
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tree = tracked_bytes()
    print(f"gpu_bundle: {bundle} {size / 2**20:.1f} MiB (xz, {time.perf_counter() - t0:.0f} s); "
          f"with the tracked files ({tree / 2**20:.1f} MiB) {(size + tree) / 2**20:.1f} MiB "
          f"of the {CARRY_LIMIT / 2**20:.0f} MiB a run may carry")
    if size + tree > CARRY_LIMIT:
        print("gpu_bundle: too large to carry", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
