"""Compose and run the operator: Kopf watches, the cache, the work queue, workers, leader election.

Kopf is used for what it does well (watch streams with re-listing and retries, logging, liveness)
through a registry built here at start-up (no module-global handlers). Its handlers only update the
cache and enqueue fleet keys; a fixed pool of workers reconciles them one fleet at a time, and a
resync timer enqueues every fleet periodically, so a missed event only delays convergence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from flotilla.api import labels
from flotilla.kube.config import load_configuration
from flotilla.operator.cache import ClusterCache, FleetKey
from flotilla.operator.config import OperatorConfig
from flotilla.operator.controller import ERROR_RETRY_S, FleetController
from flotilla.operator.kubeclient import KubeWriter
from flotilla.operator.metrics import ERROR, LEASE_KEY, PARTIAL, SUCCESS, OperatorMetrics
from flotilla.operator.prime import prime_cache, relist_nodes
from flotilla.operator.workqueue import WorkQueue

log = logging.getLogger("flotilla.operator")


@dataclass
class Runtime:
    """The objects one operator process is made of (exposed for tests and the benchmark)."""

    config: OperatorConfig
    cache: ClusterCache
    queue: WorkQueue[FleetKey]
    controller: FleetController
    writer: KubeWriter
    elector: Any = None
    reconciles: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    metrics: OperatorMetrics = field(default_factory=lambda: OperatorMetrics(CollectorRegistry()))
    clock: Callable[[], float] = time.perf_counter
    """Measures reconcile latency (a seam for tests)."""


def build_registry(rt: Runtime, api_config: Any) -> Any:
    import kopf

    registry = kopf.OperatorRegistry()
    cache, queue = rt.cache, rt.queue
    # Handlers are coroutines on purpose: Kopf runs plain functions in a thread pool, and the cache
    # and the queue belong to the event loop (no locks, no cross-thread wake-ups).

    @kopf.on.login(registry=registry)
    async def _login(**_: Any) -> Any:
        return connection_info(api_config)

    @kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL, registry=registry)
    async def _fleet(**kwargs: Any) -> None:
        event = kwargs["event"]
        queue.add(cache.apply_fleet(event.get("type"), event["object"]))

    @kopf.on.event("", "v1", "pods", labels={labels.LABEL_FLEET: kopf.PRESENT}, registry=registry)
    async def _pod(**kwargs: Any) -> None:
        event = kwargs["event"]
        key = cache.apply_pod(event.get("type"), event["object"])
        if key is not None and key in cache.fleets:
            queue.add_after(key, rt.config.pod_event_delay_s)

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def _node(**kwargs: Any) -> None:
        event = kwargs["event"]
        if cache.apply_node(event.get("type"), event["object"]):
            for key in cache.fleets_with_pods_on(event["object"]["metadata"]["name"]):
                queue.add(key)

    @kopf.on.event("scheduling.k8s.io", "v1", "priorityclasses", registry=registry)
    async def _priority_class(**kwargs: Any) -> None:
        event = kwargs["event"]
        name = cache.apply_priority_class(event.get("type"), event["object"])
        for key in cache.fleets_using_class(name):
            queue.add(key)

    return registry


def connection_info(api_config: Any) -> Any:
    """Kopf's credentials from a kubernetes_asyncio Configuration (one login for both clients)."""
    import kopf

    auth = (api_config.api_key or {}).get("authorization") or (api_config.api_key or {}).get("BearerToken")
    scheme, token = None, None
    if auth:
        parts = str(auth).split(" ", 1)
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return kopf.ConnectionInfo(
        server=api_config.host,
        ca_path=api_config.ssl_ca_cert,
        insecure=not api_config.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=api_config.cert_file,
        private_key_path=api_config.key_file,
    )


async def reconcile_once(rt: Runtime, key: FleetKey) -> float | None:
    """Reconcile one fleet, counting and timing it; returns when to reconcile it again."""
    rt.reconciles += 1
    start = rt.clock()
    try:
        outcome = await rt.controller.reconcile(key)
    except Exception:
        log.exception("reconcile of %s/%s failed", *key)
        rt.metrics.observe_reconcile(ERROR, rt.clock() - start)
        return ERROR_RETRY_S
    rt.metrics.observe_reconcile(PARTIAL if outcome.failed else SUCCESS, rt.clock() - start)
    return outcome.requeue_after


async def _worker(rt: Runtime, primed: asyncio.Event) -> None:
    await primed.wait()
    while True:
        key = await rt.queue.get()
        try:
            requeue = await reconcile_once(rt, key)
        finally:
            rt.queue.done(key)
        if requeue is not None:
            rt.queue.add_after(key, requeue)


def request_counts(rt: Runtime) -> dict[str, int]:
    """The API requests this process made so far: the writer's per verb, plus the Lease's."""
    counts = dict(rt.writer.requests)
    if rt.elector is not None:
        counts[LEASE_KEY] = rt.elector.requests
    return counts


async def _resync(rt: Runtime, relist: Callable[[], Awaitable[list[str]]] | None = None) -> None:
    while True:
        await asyncio.sleep(rt.config.resync_s)
        if relist is not None:
            # One node LIST per period: the node watch alone can miss a deletion (see replace_nodes),
            # and a node missed that way would hold its pods until the pod GC, or forever.
            try:
                dropped = await relist()
            except Exception as exc:
                log.warning("node re-list failed: %s", exc)
            else:
                for name in dropped:
                    log.warning("node %s is gone but no watch event said so; its pods are replaced", name)
        for key in rt.cache.fleet_keys():
            rt.queue.add(key)


def kopf_settings() -> Any:
    import kopf

    settings = kopf.OperatorSettings()
    # Handlers only observe (on.event): Kopf stores no progress and adds no finalizers on fleets.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Every watch event runs a handler; Kopf's per-handler success lines would flood the log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return settings


async def run_operator(
    config: OperatorConfig,
    stop: asyncio.Event | None = None,
    on_start: Callable[[Runtime], None] | None = None,
) -> None:
    """Run until `stop` is set, the process is signalled, or leadership is lost.

    `on_start` receives the Runtime once built (the benchmark reads its request counters)."""
    import kopf
    from kubernetes_asyncio.client import ApiClient, CoordinationV1Api

    from flotilla.metricsserver import serve_metrics
    from flotilla.operator.leader import LeaderElector

    api_config = await load_configuration(config.kubeconfig)
    metrics = OperatorMetrics(CollectorRegistry())
    async with contextlib.AsyncExitStack() as stack:
        api = await stack.enter_async_context(ApiClient(configuration=api_config))
        if config.metrics_port is not None:
            # Served from the start: a standby replica reports leader 0 while it waits for the Lease.
            # No /healthz here: Kopf's liveness endpoint stays Kopf's own, on its own port.
            port = await stack.enter_async_context(
                serve_metrics(metrics.registry, config.metrics_host, config.metrics_port)
            )
            log.info("metrics on http://%s:%d/metrics", config.metrics_host, port)
        elector = (
            LeaderElector(CoordinationV1Api(api), config.leader, time.time) if config.leader.enabled else None
        )
        metrics.leader.set(0)
        if elector is not None:
            await elector.acquire()
        metrics.leader.set(1)
        writer = KubeWriter(api)
        cache = ClusterCache()
        rt = Runtime(
            config=config,
            cache=cache,
            queue=WorkQueue(),
            controller=FleetController(cache, writer, config, time.time),
            writer=writer,
            elector=elector,
            metrics=metrics,
        )
        metrics.bind(cache, lambda: len(rt.queue), lambda: request_counts(rt))
        if on_start is not None:
            on_start(rt)
        stop_flag = stop or asyncio.Event()
        primed = asyncio.Event()
        lost: list[BaseException] = []
        # Our tasks exist before Kopf starts: Kopf treats tasks born later as its own at shutdown.
        rt.tasks = [asyncio.create_task(_worker(rt, primed)) for _ in range(config.workers)]
        rt.tasks.append(asyncio.create_task(_resync(rt, functools.partial(_relist_nodes, rt, api))))
        if elector is not None:
            rt.tasks.append(asyncio.create_task(_hold(elector, stop_flag, lost)))
        kopf_task = asyncio.create_task(
            kopf.operator(
                registry=build_registry(rt, api_config),
                settings=kopf_settings(),
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                liveness_endpoint=config.liveness_endpoint,
                stop_flag=stop_flag,
            )
        )
        try:
            # Kopf's handlers may enqueue keys meanwhile; nothing is reconciled before the cache is primed.
            await prime_cache(api, cache, config.namespaces)
            for key in cache.fleet_keys():
                rt.queue.add(key)
            primed.set()
            await kopf_task
        finally:
            stop_flag.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(kopf_task, 30)
            for task in rt.tasks:
                task.cancel()
            for task in rt.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            rt.queue.close()
            metrics.leader.set(0)
            if elector is not None and not lost:
                await elector.release()
        if lost:
            raise lost[0]


async def _relist_nodes(rt: Runtime, api: Any) -> list[str]:
    rt.writer.requests["list_nodes"] += 1
    return await relist_nodes(api, rt.cache)


async def _hold(elector: Any, stop: asyncio.Event, lost: list[BaseException]) -> None:
    try:
        await elector.hold()
    except Exception as exc:
        log.error("stopping: %s", exc)
        lost.append(exc)
        stop.set()
