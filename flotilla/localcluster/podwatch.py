"""Keep one engine per matching pod: start it when the pod gets an IP, stop it when it goes.

The watcher plays the part of the kubelets' container runtime for KWOK pods: list + watch the
pods that match a label selector and reconcile each event against the `EngineLauncher`. Starting
an engine takes a second or two, so starts and stops run as tasks (serialized per pod) and the
watch stream is never held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from flotilla.localcluster.engines import EngineLauncher
from flotilla.localcluster.podendpoint import endpoint_from_pod
from flotilla.localcluster.process import ProcessFailed

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

log = logging.getLogger(__name__)


def pod_key(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}/{meta.get('uid', '')}"


class PodEngineWatcher:
    """Runs engines for the pods matching `label_selector` in `namespace` (None: all namespaces).

    Use as `async with PodEngineWatcher(api, launcher, ...) as watcher:`; leaving the block stops
    the watch and every engine the watcher started. `failures` records engines that did not start.
    """

    def __init__(
        self,
        api: ApiClient,
        launcher: EngineLauncher,
        *,
        label_selector: str,
        namespace: str | None = None,
        watch_timeout_s: int = 60,
    ) -> None:
        self.api = api
        self.launcher = launcher
        self.label_selector = label_selector
        self.namespace = namespace
        self.watch_timeout_s = watch_timeout_s
        self.failures: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._started: set[str] = set()

    async def __aenter__(self) -> PodEngineWatcher:
        self._main = asyncio.create_task(self.run(), name="pod-engine-watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for key in list(self._started):
            await self.launcher.stop(key)
        self._started.clear()

    async def run(self) -> None:
        """List, reconcile, then watch from the list's resourceVersion; repeat when it ends."""
        from kubernetes_asyncio import watch
        from kubernetes_asyncio.client import CoreV1Api

        core = CoreV1Api(self.api)
        while True:
            try:
                listing = await self._list(core)
                seen = {pod_key(p) for p in listing["items"]}
                for key in self._started - seen:
                    self._schedule(key, None)
                for pod in listing["items"]:
                    self._schedule(pod_key(pod), pod)
                async with watch.Watch() as stream:
                    events = stream.stream(
                        self._list_call(core),
                        label_selector=self.label_selector,
                        resource_version=listing["metadata"]["resourceVersion"],
                        timeout_seconds=self.watch_timeout_s,
                    )
                    async for event in events:
                        await self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # the API server restarting or a 410 Gone: list again
                log.exception("pod watch failed; listing again")
                await asyncio.sleep(1.0)

    def _list_call(self, core: Any) -> Any:
        # A lambda has no docstring, so the watch leaves events as dicts instead of building V1Pods.
        if self.namespace is None:
            return lambda **kw: core.list_pod_for_all_namespaces(**kw)  # noqa: PLW0108
        return lambda **kw: core.list_namespaced_pod(self.namespace, **kw)

    async def _list(self, core: Any) -> dict[str, Any]:
        response = await self._list_call(core)(label_selector=self.label_selector, _preload_content=False)
        listing: dict[str, Any] = json.loads(await response.read())
        return listing

    async def _on_event(self, event: Any) -> None:
        raw = event.get("raw_object") if isinstance(event, dict) else None
        if not raw or event.get("type") == "ERROR":
            return
        deleted = event["type"] == "DELETED"
        self._schedule(pod_key(raw), None if deleted else raw)

    def _schedule(self, key: str, pod: dict[str, Any] | None) -> None:
        task = asyncio.create_task(self._reconcile(key, pod))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile(self, key: str, pod: dict[str, Any] | None) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            endpoint = endpoint_from_pod(pod) if pod is not None else None
            if endpoint is None:
                if key in self._started:
                    self._started.discard(key)
                    await self.launcher.stop(key)
                return
            if key in self.launcher.running_keys() or key in self.failures:
                return
            try:
                await self.launcher.start(endpoint)
                self._started.add(key)
            except ProcessFailed as exc:
                self.failures[key] = str(exc)
                log.error("engine for %s failed: %s", key, exc)
