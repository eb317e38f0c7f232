"""`kubectl` against the local cluster, for tests and the demo (the binary is built with Kubernetes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message has the command line and its stderr."""


@dataclass(frozen=True)
class Kubectl:
    """Runs kubectl with the cluster's kubeconfig (and `namespace`, when set).

    `kubectl("get", "nodes")` runs synchronously and returns stdout; `await kubectl.run(...)`
    does the same without blocking the event loop; `kubectl.json("get", "pods")` parses `-o json`.
    """

    binary: Path
    kubeconfig: Path
    namespace: str | None = None
    timeout_s: float = 60.0

    def in_namespace(self, namespace: str) -> Kubectl:
        return replace(self, namespace=namespace)

    def argv(self, args: Sequence[str]) -> list[str]:
        base = [str(self.binary), f"--kubeconfig={self.kubeconfig}"]
        if self.namespace is not None:
            base.append(f"--namespace={self.namespace}")
        return [*base, *args]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        argv = self.argv(args)
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=self.timeout_s, check=False
        )
        if check and done.returncode != 0:
            raise KubectlError(f"{' '.join(argv[2:])} -> exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    async def run(self, *args: str, input: str | None = None, check: bool = True) -> str:
        argv = self.argv(args)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                process.communicate(input.encode() if input is not None else None), self.timeout_s
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if check and process.returncode != 0:
            raise KubectlError(f"{' '.join(argv[2:])} -> exit {process.returncode}: {err.decode().strip()}")
        return out.decode()

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, manifest: str) -> str:
        """`kubectl apply -f -` with `manifest` (YAML or JSON) on stdin."""
        return self("apply", "-f", "-", input=manifest)
