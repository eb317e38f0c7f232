"""Client authentication: API keys, per-key model allow-lists and token-rate limits.

Keys come from files (a Kubernetes Secret mounted as a volume: a directory of key files, or one
YAML/JSON file of entries) and are held only as sha256 digests. A presented key is hashed and
compared with `hmac.compare_digest` against every digest, without stopping at a match, so the time a
lookup takes says nothing about which key, or how much of one, matched. Keys are never logged: log
lines name the key's `name`.

Errors follow OpenAI: a missing or wrong key is 401 `invalid_api_key`; a model the key may not use is
404 `model_not_found`, the same answer as a model that does not exist (OpenAI's "does not exist or you
do not have access to it"), so a key cannot probe which models exist; a key over its token rate is
429 `rate_limit_exceeded` with Retry-After. `/health` and `/metrics` stay open (probes, Prometheus);
the chart keeps them on the pod network.

The rate limit is a token bucket per key (capacity = tokens_per_minute, refilled continuously). A
request is charged up front its prompt estimate (chars / 4, or the number of token ids) plus its
`max_tokens` (or `assumed_max_tokens`), and the charge is reconciled with the usage the engine
reports when the request ends (refunded in full on an error status).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message

from flotilla.openaihttp import read_body
from flotilla.router.config import ApiKeyEntry, AuthConfig
from flotilla.router.errors import ApiError
from flotilla.router.usage import stream_usage_tokens, usage_tokens

log = logging.getLogger("flotilla.router.auth")

Handler = Callable[[Request, str, dict[str, Any] | None], Awaitable[Response]]
"""The request path: the request, its kind, and its body as the gate decoded it (a JSON object), so
that it is decoded once; None where the gate decoded nothing or no object (the path decodes it)."""


class AuthError(ApiError):
    """An ApiError with OpenAI's string `code` and `type` (e.g. `invalid_api_key`)."""

    def __init__(
        self, status: int, message: str, code: str, *, kind: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, message, retry_after=retry_after)
        self.code = code
        self.kind = kind

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.kind, "param": None, "code": self.code}
        return orjson.dumps({"error": err})


def _invalid_key() -> AuthError:
    return AuthError(401, "Incorrect API key provided.", "invalid_api_key", kind="invalid_request_error")


def _no_model(model: str) -> AuthError:
    return AuthError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "model_not_found",
        kind="invalid_request_error",
    )


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    models: frozenset[str] | None
    tokens_per_minute: int | None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _from_entry(e: ApiKeyEntry) -> ApiKey:
    digest = bytes.fromhex(e.sha256) if e.sha256 is not None else _digest(e.key or "")
    models = frozenset(e.models) if e.models is not None else None
    return ApiKey(e.name, digest, models, e.tokens_per_minute)


def load_keys(config: AuthConfig) -> list[ApiKey]:
    """Every key the config names (inline, `keys_file`, `keys_dir`); refuses duplicates and none."""
    entries = list(config.keys)
    if config.keys_file is not None:
        data = yaml.safe_load(Path(config.keys_file).read_text()) or []
        if isinstance(data, dict):
            data = data.get("keys", [])
        entries += [ApiKeyEntry.model_validate(d) for d in data]
    keys = [_from_entry(e) for e in entries]
    if config.keys_dir is not None:
        models = frozenset(config.dir_models) if config.dir_models is not None else None
        # A mounted Secret holds `..data` and timestamped folders beside the key files: skip dotfiles.
        for path in sorted(Path(config.keys_dir).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            secret = path.read_text().strip()
            if secret:
                keys.append(ApiKey(path.name, _digest(secret), models, config.dir_tokens_per_minute))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("auth: two keys share a name")
    if len({k.digest for k in keys}) != len(keys):
        raise ValueError("auth: two keys are the same key")
    if not keys:
        raise ValueError("auth.mode api_keys: no keys found")
    return keys


class Keyring:
    """Finds the key a client presented, in time independent of which key (if any) it is."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)

    def lookup(self, presented: str) -> ApiKey | None:
        digest = _digest(presented)
        found: ApiKey | None = None
        for key in self.keys:  # no early exit: every lookup compares against every key
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


class TokenBucket:
    """Tokens per minute, refilled continuously; the balance may go below zero after reconciling."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._balance = self.capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._balance = min(self.capacity, self._balance + (now - self._at) * self.rate)
        self._at = now

    def take(self, tokens: int) -> float | None:
        """Take `tokens`; None if taken, else the seconds until they could be (nothing is taken)."""
        self._refill()
        if self._balance >= tokens:
            self._balance -= tokens
            return None
        return (tokens - self._balance) / self.rate

    def give(self, tokens: float) -> None:
        """Return tokens (negative: charge more) once a request's actual usage is known."""
        self._refill()
        self._balance = min(self.capacity, self._balance + tokens)


def estimate_tokens(kind: str, body: dict[str, Any], assumed_max_tokens: int) -> int:
    """Prompt tokens (chars / 4 of text, exact for token ids) + the completion tokens asked for.

    Not `features.extract`'s prompt_tokens, on purpose: that one sizes one sequence for placement
    (the first prompt of a batch, the text without JSON). This is a charge against a key's budget,
    so it covers the whole request: every prompt of a batch, the messages' JSON (a rough stand-in
    for the chat template's extra tokens), and `n` completions of `max_tokens` for either kind.
    """
    prompt: Any = body.get("messages") if kind == "chat" else body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompt_tokens = len(prompt)
    else:
        prompt_tokens = math.ceil(len(orjson.dumps(prompt)) / 4) if prompt is not None else 0
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    completion = asked if isinstance(asked, int) and asked > 0 else assumed_max_tokens
    n = body.get("n")
    return prompt_tokens + completion * (n if isinstance(n, int) and n > 0 else 1)


def _decoded(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object; None for anything else (the request path answers that 400)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _replayed(request: Request, raw: bytes) -> Request:
    """The request with its body already read and its Authorization removed (the router's key is
    not the engine's business); after the body, receive() is the client's (disconnects)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await request.receive()

    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"authorization"]
    return Request(scope, receive)


class Gate:
    """Authenticates, authorizes and rate-limits a request before the request path sees it."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        max_body_bytes: int,
        keys: Iterable[ApiKey] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = config.mode == "api_keys"
        self._config = config
        self._max_body = max_body_bytes
        self._clock = clock
        self._keyring = Keyring(())
        self._buckets: dict[str, TokenBucket] = {}
        self.on_charge: Callable[[str, float], None] | None = None
        """Told of every take from (positive) and refund to (negative) a key's bucket, by key name:
        the replicas' shared state sends them to the peers (`peer_charge`)."""
        self._install(list(keys) if keys is not None else (load_keys(config) if self.enabled else []))

    def _install(self, keys: list[ApiKey]) -> None:
        """Swap in a key set; a key that stays (same name and rate) keeps its bucket's balance."""
        buckets = {}
        for k in keys:
            if k.tokens_per_minute:
                old = self._buckets.get(k.name)
                same = old is not None and old.capacity == k.tokens_per_minute
                buckets[k.name] = (
                    old if old is not None and same else TokenBucket(k.tokens_per_minute, self._clock)
                )
        self._keyring, self._buckets = Keyring(keys), buckets
        if self.enabled:
            log.info("api keys loaded", extra={"keys": sorted(k.name for k in keys)})

    @property
    def reloads(self) -> bool:
        """Whether keys come from files that can change under a running router (a mounted Secret)."""
        c = self._config
        return self.enabled and c.reload_interval_s is not None and bool(c.keys_dir or c.keys_file)

    async def reload(self) -> None:
        """Read the key files again (off the event loop); on any error keep the keys in use."""
        try:
            keys = await asyncio.to_thread(load_keys, self._config)
        except Exception as e:  # a half-written Secret must not take the router down
            # The type only: a parse error's text can quote the file, that is a key.
            log.warning("api keys not reloaded; keeping the previous set", extra={"error": type(e).__name__})
            return
        if {(k.name, k.digest, k.models, k.tokens_per_minute) for k in keys} != self._fingerprint():
            self._install(keys)

    def _fingerprint(self) -> set[tuple[str, bytes, frozenset[str] | None, int | None]]:
        return {(k.name, k.digest, k.models, k.tokens_per_minute) for k in self._keyring.keys}

    async def run_reloads(self) -> None:
        """Every `reload_interval_s`: Kubernetes updates a mounted Secret in place when it changes."""
        assert self._config.reload_interval_s is not None
        while True:
            await asyncio.sleep(self._config.reload_interval_s)
            await self.reload()

    def authenticate(self, request: Request) -> ApiKey:
        presented = _bearer(request)
        key = self._keyring.lookup(presented) if presented is not None else None
        if key is None:
            log.info("request refused: no valid api key", extra={"path": request.url.path})
            raise _invalid_key()
        return key

    def visible_models(self, request: Request, models: Iterable[str]) -> list[str]:
        """`/v1/models`: the models the caller's key may use (all without authentication)."""
        if not self.enabled:
            return list(models)
        key = self.authenticate(request)
        return [m for m in models if key.allows(m)]

    async def serve(self, request: Request, kind: str, handle: Handler) -> Response:
        if not self.enabled:
            return await handle(request, kind, None)
        rid = request.headers.get("x-request-id")
        try:
            key = self.authenticate(request)
            raw = await read_body(request, self._max_body)  # the request path's own bounded read
            body = _decoded(raw)
            charge = self._admit(key, kind, body)
        except ApiError as e:
            return e.response(rid)
        forwarded = _replayed(request, raw)
        try:
            response = await handle(forwarded, kind, body)
        except BaseException:
            self._settle(key, charge, None)
            raise
        if response.status_code >= 400:
            self._settle(key, charge, 0)
            return response
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._metered(response.body_iterator, key, charge)
            return response
        self._settle(key, charge, usage_tokens(bytes(response.body), "total_tokens"))
        return response

    def _admit(self, key: ApiKey, kind: str, body: dict[str, Any] | None) -> int:
        """Check the model and take the estimate from the key's bucket; returns what was taken.
        A body the request path will refuse (bad JSON, no model) passes through uncharged."""
        if body is None or not isinstance(body.get("model"), str):
            return 0
        model = body["model"]
        if not key.allows(model):
            log.info("request refused: model not allowed", extra={"key": key.name, "model": model})
            raise _no_model(model)
        bucket = self._buckets.get(key.name)
        if bucket is None:
            return 0
        need = estimate_tokens(kind, body, self._config.assumed_max_tokens)
        if need > bucket.capacity:
            raise AuthError(
                429,
                f"Request too large: about {need} tokens, the key's limit is "
                f"{int(bucket.capacity)} tokens per minute.",
                "rate_limit_exceeded",
                kind="tokens",
            )
        wait = bucket.take(need)
        if wait is not None:
            log.info("request refused: token rate", extra={"key": key.name, "retry_after_s": wait})
            raise AuthError(
                429,
                f"Rate limit reached for key {key.name}: {int(bucket.capacity)} tokens per minute.",
                "rate_limit_exceeded",
                kind="tokens",
                retry_after=math.ceil(wait),
            )
        if self.on_charge is not None:
            self.on_charge(key.name, need)
        return need

    def peer_charge(self, key_name: str, tokens: float) -> None:
        """Another replica took `tokens` from this key (negative: refunded): the limit is the key's,
        whichever replica serves it. The balance may go below zero: the next request waits."""
        bucket = self._buckets.get(key_name)
        if bucket is not None:
            bucket.give(-tokens)

    def _settle(self, key: ApiKey, charged: int, actual: int | None) -> None:
        """Reconcile the up-front charge with actual usage (None: unknown, keep the charge)."""
        bucket = self._buckets.get(key.name)
        if bucket is not None and charged and actual is not None:
            bucket.give(charged - actual)
            if self.on_charge is not None:
                self.on_charge(key.name, actual - charged)

    async def _metered(self, chunks: Any, key: ApiKey, charge: int) -> AsyncIterator[Any]:
        """Relays a stream and settles its charge on the usage chunk, if the client asked for one."""
        actual: int | None = None
        try:
            async for chunk in chunks:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                if (tokens := stream_usage_tokens(data, "total_tokens")) is not None:
                    actual = tokens
                yield chunk
        finally:
            self._settle(key, charge, actual)
