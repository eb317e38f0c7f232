"""The router's configuration file (YAML or JSON), validated with extra="forbid"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flotilla.api.routing import DEFAULT_POLICY
from flotilla.router.batch_target import BatchTargetParams
from flotilla.router.features import PREFIX_BLOCK_CHARS
from flotilla.router.model_routing import ModelRouting
from flotilla.router.peers.config import PeersConfig
from flotilla.router.queue_orders import default_queue_orders


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Secretive(_Strict):
    # Validation errors quote their input; an input holding an API key must not reach the logs.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class StaticInstance(_Strict):
    url: str = Field(pattern=r"^https?://")
    model: str
    name: str | None = None
    max_inflight: int | None = Field(default=None, gt=0)


class StaticDiscoveryConfig(_Strict):
    instances: list[StaticInstance] = Field(min_length=1)
    models: dict[str, ModelRouting] = Field(default_factory=dict)
    """Per-model policy, as a fleet's spec.router would give it in a cluster."""


class KubernetesDiscoveryConfig(_Strict):
    namespace: str | None = None
    """Watch one namespace; None watches all."""
    kubeconfig: str | None = None
    """Path to a kubeconfig; None uses the in-cluster service account (or the default kubeconfig)."""
    port: int | None = Field(default=None, gt=0, lt=65536)
    """Engine port; None uses the port named `http` on the engine container, else 8000."""


class ApiKeyEntry(_Secretive):
    """One API key: the key itself or its sha256 (hex), a name for the logs, and what it may do."""

    name: str = Field(min_length=1)
    key: str | None = Field(default=None, min_length=1, repr=False)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    models: list[str] | None = None
    """Models this key may use (None: all)."""
    tokens_per_minute: int | None = Field(default=None, gt=0)
    """Prompt + completion tokens per minute (None: unlimited)."""

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r}: give exactly one of `key` and `sha256`")
        return self


class AuthConfig(_Secretive):
    """Who may call the router (`auth.py`). `mode` has no default: an operator must choose."""

    mode: Literal["none", "api_keys"]
    keys_file: str | None = None
    """A YAML/JSON list of ApiKeyEntry (or `{keys: [...]}`), e.g. one file of a mounted Secret."""
    keys_dir: str | None = None
    """A directory of key files (a Secret mounted as a volume): file name = key name, content = key."""
    keys: list[ApiKeyEntry] = Field(default_factory=list)
    """Keys given inline (prefer `sha256` to `key` here)."""
    dir_models: list[str] | None = None
    """Allow-list of the keys read from `keys_dir` (None: all models)."""
    dir_tokens_per_minute: int | None = Field(default=None, gt=0)
    """Token-rate limit of each key read from `keys_dir` (None: unlimited)."""
    reload_interval_s: float | None = Field(default=30.0, gt=0)
    """Re-read `keys_file`/`keys_dir` this often (a mounted Secret changes in place); None: never."""
    assumed_max_tokens: int = Field(default=1024, gt=0)
    """Completion tokens charged up front for a request that sets no `max_tokens` (reconciled with
    its actual usage when it ends)."""

    @model_validator(mode="after")
    def _keys_when_required(self) -> AuthConfig:
        sources = self.keys or self.keys_file or self.keys_dir
        if self.mode == "api_keys" and not sources:
            raise ValueError("auth.mode api_keys needs `keys`, `keys_file` or `keys_dir`")
        if self.mode == "none" and sources:
            raise ValueError("auth.mode none with keys configured: set mode api_keys or drop the keys")
        return self


class RouterConfig(_Secretive):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, gt=0, lt=65536)
    default_policy: str = DEFAULT_POLICY
    """A registered policy name (the router may carry plug-ins the CRD does not list: tests do)."""
    default_policy_params: dict[str, Any] = Field(default_factory=dict)
    max_inflight_per_instance: int = Field(default=256, gt=0)
    """Requests the router lets one instance hold (vLLM's default max_num_seqs)."""
    max_queue_per_model: int = Field(default=1024, ge=0)
    max_queue_wait_s: float = Field(default=30.0, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    scrape_interval_s: float = Field(default=0.25, gt=0)
    scrape_timeout_s: float = Field(default=1.0, gt=0)
    eject_after_failures: int = Field(default=2, ge=1)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    prefix_block_chars: int = Field(default=PREFIX_BLOCK_CHARS, gt=0)
    queue_order: str = "shortest_work_first"
    """Order of a model's waiting requests, a name in `queue_orders`: `shortest_work_first` (the
    default: the prompt at its prefill weight plus the predicted output, with aging and a 10 s
    starvation bound; the best order in benchmarks/backlog wherever a queue formed, and inert
    where none does), `fcfs` (arrival), `shortest_predicted_first`, `least_attained_service`."""
    queue_order_params: dict[str, Any] = Field(default_factory=dict)
    """Params of the order (`aging_per_s`, `starvation_s`; `prompt_token_weight` for work)."""
    kv_usage_limit: float | None = Field(default=0.9, gt=0, le=1)
    """Admit a request to an instance only while its estimated KV usage stays under this (below
    vLLM's preemption point; benchmarks/backlog: preemptions 125 -> 4 on Mooncake at 100% load);
    null: off. Inert where an engine does not publish its KV capacity."""
    batch_target: BatchTargetParams | None = None
    """Hold an instance's batch at its target from a step-time profile (`batch_target.py`):
    `{profile: h100-llama3-8b, max_decode_slowdown: 2.0, tpot_ms: ...}`; None: off."""
    client_hints: bool = True
    """Read the clients' hints (output length, priority, TTFT/TPOT targets: `hints.py`); false
    where clients are not trusted with the queue's order."""
    slice_rebalance: dict[str, Any] = Field(default_factory=dict)
    """When a continuation slice moves to another instance (`slicing.RebalanceParams`)."""
    predictor_artifacts_dir: str | None = None
    """Where predictor artifacts are looked up by name (None: the ones shipped with the router)."""
    predictor_log_capacity: int = Field(default=50_000, ge=1)
    """Finished requests kept per model in the in-memory feature log (for refits)."""
    predictor_refit_interval_s: float | None = Field(default=None, gt=0)
    """Refit each learned predictor's head on its feature log this often (None: never in-router)."""
    predictor_deadline_s: float = Field(default=0.005, ge=0)
    """Longest a request waits for its learned length prediction, and only when it could change the
    dispatch (KV check on, nothing queued); then it proceeds with a fallback estimate and the
    accounting is corrected when the prediction lands."""
    seed: int | None = None
    """Seed of the tie-breaking random generator (None: from the OS, so replicas differ)."""
    auth: AuthConfig | None = None
    """Client authentication. A config file must set it (`load_config`); None (in-process only,
    e.g. tests and benchmarks building a RouterConfig) serves without authentication."""
    peers: PeersConfig | None = None
    """Share routing state with the other replicas over NATS (`peers/`); None: each replica alone."""
    static: StaticDiscoveryConfig | None = None
    kubernetes: KubernetesDiscoveryConfig | None = None

    @model_validator(mode="after")
    def _one_discovery(self) -> RouterConfig:
        if (self.static is None) == (self.kubernetes is None):
            raise ValueError("configure exactly one of `static` and `kubernetes` discovery")
        return self

    @model_validator(mode="after")
    def _queue_order_exists(self) -> RouterConfig:
        default_queue_orders().factory(self.queue_order, self.queue_order_params)  # raises on a bad one
        return self


def load_config(path: str | Path) -> RouterConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if isinstance(data, dict) and "auth" not in data:
        # Serving without authentication must be a choice someone wrote down, never a default.
        raise ValueError(
            f"{path}: set `auth` explicitly: `auth: {{mode: api_keys, keys_dir: ...}}`, "
            "or `auth: {mode: none}` to serve without authentication"
        )
    return RouterConfig.model_validate(data)
