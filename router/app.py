"""The router process's composition root: build the parts once, wire them, serve the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flotilla.router.admission import Admission, queue_factory
from flotilla.router.auth import Gate
from flotilla.router.batch_target import BatchTarget
from flotilla.router.config import AuthConfig, RouterConfig
from flotilla.router.discovery import Discovered, Discovery
from flotilla.router.errors import ApiError
from flotilla.router.instances import InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.peers.link import PeerLink
from flotilla.router.policies import Observer, PolicyRegistry, RequestFeatures, default_registry
from flotilla.router.policy_book import PolicyBook
from flotilla.router.prediction import LengthPredictor
from flotilla.router.predictor_service import Loader, PredictorService, default_loader
from flotilla.router.proxy import RequestPath
from flotilla.router.scrape import Scraper
from flotilla.router.slicing.continuation import SliceRunner
from flotilla.router.slicing.decisions import RebalanceParams
from flotilla.router.upstream import Upstream

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("flotilla.router")


class Router:
    def __init__(
        self,
        config: RouterConfig,
        discovery: Discovery,
        *,
        registry: CollectorRegistry,
        policies: PolicyRegistry | None = None,
        predictor: LengthPredictor | None = None,
        predictor_loader: Loader | None = None,
        client: Upstream | None = None,
    ) -> None:
        self.config = config
        self.discovery = discovery
        self.metrics = RouterMetrics(registry)
        self.table = InstanceTable(default_max_inflight=config.max_inflight_per_instance)
        self.client = client or Upstream(connect_timeout_s=config.connect_timeout_s)
        book = PolicyBook(
            policies or default_registry(),
            config.default_policy,
            config.default_policy_params,
            metrics=self.metrics,
        )
        self.policies = book
        self.admission = Admission(
            self.table,
            book,
            self.metrics,
            rng=random.Random(config.seed),
            queue_factory=queue_factory(config.queue_order, config.queue_order_params),
            max_queue=config.max_queue_per_model,
            max_wait_s=config.max_queue_wait_s,
            kv_usage_limit=config.kv_usage_limit,
            batch_target=None
            if config.batch_target is None
            else BatchTarget.from_params(config.batch_target),
            on_placed=self._placed,
        )
        self.scraper = Scraper(
            self.table,
            self.client,
            interval_s=config.scrape_interval_s,
            timeout_s=config.scrape_timeout_s,
            eject_after=config.eject_after_failures,
            on_change=self._instances_changed,
        )
        self.predictors = PredictorService(
            self.metrics,
            loader=predictor_loader or default_loader(config.predictor_artifacts_dir),
            log_capacity=config.predictor_log_capacity,
            refit_interval_s=config.predictor_refit_interval_s,
            deadline_s=config.predictor_deadline_s,
            matters=self.admission.prediction_matters,
        )
        self.path = RequestPath(
            self.admission,
            self.client,
            self.metrics,
            predictor or self.predictors,
            max_attempts=config.max_attempts,
            request_timeout_s=config.request_timeout_s,
            max_body_bytes=config.max_body_bytes,
            prefix_block_chars=config.prefix_block_chars,
            client_hints=config.client_hints,
            on_eject=self._ejected,
            slicer=SliceRunner(
                self.admission,
                self.client,
                self.metrics,
                rebalance=RebalanceParams.model_validate(config.slice_rebalance),
                max_attempts=config.max_attempts,
                on_eject=self._ejected,
            ),
            slice_tokens_of=self.table.slice_tokens,
        )
        self.gate = Gate(config.auth or AuthConfig(mode="none"), max_body_bytes=config.max_body_bytes)
        self.peers: PeerLink | None = None
        """The replicas' shared state (`peers`), when configured."""
        if config.peers is not None:
            self.peers = PeerLink(
                config.peers,
                self.table,
                self.metrics,
                replica=config.peers.replica,
                observe=self._peer_placed,
                charge=self.gate.peer_charge,
            )
            self.table.watch(self.peers.changed)
            self.gate.on_charge = self.peers.charged
        self._created = int(time.time())
        self._tasks: list[asyncio.Task[None]] = []
        self.discovered = False
        """Whether discovery has delivered its first instance set (before it, no model is known)."""
        self.draining = False
        """Set on SIGTERM: /ready fails so the replica leaves the Service while its streams finish."""

    # ---- wiring ------------------------------------------------------------------------------

    def _on_discovery(self, discovered: Discovered) -> None:
        self.table.update(discovered.instances, discovered.routing)
        self.discovered = True
        self.predictors.want({model: self.table.routing(model).predictor for model in self.table.models()})
        log.info("instances updated", extra={"instances": sorted(s.id for s in discovered.instances)})
        self._instances_changed()

    def _instances_changed(self) -> None:
        for model in self.table.models():
            self.metrics.routable.labels(model).set(len(self.table.routable(model)))
        self.admission.pump()

    def _placed(self, features: RequestFeatures, instance_id: str) -> None:
        # Only a policy that learns from placements (a prefix index) needs the peers' ones.
        if self.peers is not None and isinstance(self._policy_of(features.model), Observer):
            self.peers.placed(features, instance_id)

    def _policy_of(self, model: str) -> object:
        return self.policies.policy_for(model, self.table.routing(model))

    def _peer_placed(self, features: RequestFeatures, instance_id: str) -> None:
        """A peer placed a request: a policy that learns from placements (a prefix index) learns it."""
        policy = self._policy_of(features.model)
        if isinstance(policy, Observer):
            policy.observe(features, instance_id)

    def _ejected(self, instance_id: str) -> None:
        self.metrics.ejections.labels(instance_id).inc()
        self._instances_changed()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._discover(), name="router-discovery"))
        self._tasks.append(asyncio.create_task(self.scraper.run(), name="router-scraper"))
        if self.gate.reloads:
            self._tasks.append(asyncio.create_task(self.gate.run_reloads(), name="router-api-keys"))
        if self.peers is not None:
            self._tasks.append(asyncio.create_task(self.peers.run(), name="router-peers"))

    @property
    def ready(self) -> bool:
        """Whether to take new traffic: the instance list is known and the replica is not draining."""
        return self.discovered and not self.draining

    def begin_drain(self) -> None:
        self.draining = True

    async def _discover(self) -> None:
        await self.discovery.run(self._on_discovery)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.predictors.aclose()
        await self.client.close()

    # ---- HTTP --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        # A replica that has just started knows no instance yet: a retryable refusal, not a 404.
        starting = ApiError(503, "the router is starting: instances not discovered yet", retry_after=1)

        async def completions(request: Request) -> Response:
            if not self.discovered:
                return starting.response()
            return await self.gate.serve(request, "completion", self.path.handle)

        async def chat(request: Request) -> Response:
            if not self.discovered:
                return starting.response()
            return await self.gate.serve(request, "chat", self.path.handle)

        async def models(request: Request) -> Response:
            try:
                visible = self.gate.visible_models(request, sorted(self.table.routable_models()))
            except ApiError as e:
                return e.response()
            data = [
                {"id": m, "object": "model", "created": self._created, "owned_by": "flotilla"}
                for m in visible
            ]
            return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

        async def health(_: Request) -> Response:
            # Liveness: the process answers. Whether to send it traffic is /ready's question.
            return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

        async def ready(_: Request) -> Response:
            if self.ready:
                return Response(orjson.dumps({"status": "ready"}), media_type="application/json")
            reason = "draining" if self.draining else "starting"
            return Response(orjson.dumps({"status": reason}), status_code=503, media_type="application/json")

        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        async def http_error(_: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return ApiError(exc.status_code, exc.detail or "error").response()

        async def internal_error(_: Request, exc: Exception) -> Response:
            log.exception("unhandled error", exc_info=exc)
            return ApiError(500, "internal router error").response()

        routes = [
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={HTTPException: http_error, Exception: internal_error},
        )


def build_discovery(config: RouterConfig) -> Discovery:
    if config.static is not None:
        from flotilla.router.discovery.static import StaticDiscovery

        return StaticDiscovery(config.static)
    assert config.kubernetes is not None
    from flotilla.router.discovery.kube import KubeDiscovery

    return KubeDiscovery(config.kubernetes)


async def serve(config: RouterConfig) -> None:
    import uvicorn

    router = Router(config, build_discovery(config), registry=CollectorRegistry())
    server_config = uvicorn.Config(
        router.app(),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
        backlog=4096,
    )
    await draining_server(server_config, router).serve()


def draining_server(config: uvicorn.Config, router: Router) -> uvicorn.Server:
    """uvicorn's Server, telling the router first when a signal starts the drain (uvicorn stops
    listening and lets requests in flight finish; /ready answers 503 from that moment)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            router.begin_drain()
            super().handle_exit(sig, frame)

    return DrainingServer(config)
