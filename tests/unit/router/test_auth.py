"""Router authentication: key lookup, allow-lists, token-rate limits (fake clock), no key in logs."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flotilla.router import auth
from flotilla.router.auth import ApiKey, Gate, Keyring, TokenBucket, estimate_tokens, load_keys
from flotilla.router.config import AuthConfig, RouterConfig, load_config

ALICE, BOB = "sk-alice-0123456789abcdef", "sk-bob-fedcba9876543210"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(**extra: Any) -> AuthConfig:
    keys = [
        {"name": "alice", "key": ALICE, "models": ["small"], "tokens_per_minute": 600},
        {"name": "bob", "sha256": hashlib.sha256(BOB.encode()).hexdigest()},
    ]
    return AuthConfig.model_validate({"mode": "api_keys", "keys": keys, **extra})


def _app(gate: Gate, usage: Callable[[dict[str, Any]], int] | None = None) -> tuple[Starlette, list[Any]]:
    """A Starlette app whose request path is a fake that records what it was given."""
    seen: list[Any] = []

    async def handle(request: Request, kind: str, decoded: dict[str, Any] | None) -> Response:
        body = orjson.loads(await request.body())
        # The gate hands on the body it decoded, so the path does not decode it again.
        assert decoded == (body if gate.enabled else None)
        seen.append((kind, dict(request.headers), body))
        total = usage(body) if usage else body.get("max_tokens", 0)
        if body.get("stream"):

            async def chunks() -> Any:
                yield b'data: {"choices": []}\n\n'
                yield b'data: {"usage": {"total_tokens": %d}}\n\n' % total
                yield b"data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        return Response(orjson.dumps({"usage": {"total_tokens": total}}), media_type="application/json")

    async def completions(request: Request) -> Response:
        return await gate.serve(request, "completion", handle)

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])]), seen


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router")


def _post(c: httpx.AsyncClient, key: str | None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return c.post("/v1/completions", json={"model": "small", "prompt": "hi", **body}, headers=headers)


# ---- key lookup ------------------------------------------------------------------------------


def test_lookup_compares_against_every_key_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [ApiKey(f"k{i}", hashlib.sha256(f"secret-{i}".encode()).digest(), None, None) for i in range(5)]
    ring = Keyring(keys)
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, expected in [("secret-0", "k0"), ("secret-4", "k4"), ("nope", None), ("", None)]:
        calls.clear()
        found = ring.lookup(presented)
        assert (found.name if found else None) == expected
        # Same work for the first key, the last, and no key: five fixed-length digest comparisons.
        assert calls == [(32, 32)] * 5


def test_keys_load_from_a_mounted_secret_dir_and_a_yaml_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    (secret / "..2026_11_22_data").mkdir(parents=True)
    (secret / "..2026_11_22_data" / "team-a").write_text("sk-a\n")
    (secret / "..data").symlink_to(secret / "..2026_11_22_data")
    (secret / "team-a").symlink_to(secret / "..data" / "team-a")
    entries = tmp_path / "keys.yaml"
    entries.write_text(
        "keys:\n"
        f"- {{name: team-b, sha256: {hashlib.sha256(b'sk-b').hexdigest()}, models: [small]}}\n"
        "- {name: team-c, key: sk-c, tokens_per_minute: 100}\n"
    )
    config = AuthConfig(
        mode="api_keys", keys_dir=str(secret), keys_file=str(entries), dir_tokens_per_minute=50
    )
    keys = {k.name: k for k in load_keys(config)}
    assert sorted(keys) == ["team-a", "team-b", "team-c"]
    ring = Keyring(keys.values())
    assert ring.lookup("sk-a") == keys["team-a"] and keys["team-a"].tokens_per_minute == 50
    assert ring.lookup("sk-b") == keys["team-b"] and not keys["team-b"].allows("large")
    assert ring.lookup("sk-c") == keys["team-c"] and keys["team-c"].allows("large")
    assert ring.lookup("sk-a\n") is None


def test_config_refuses_ambiguous_or_missing_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        AuthConfig.model_validate({"mode": "api_keys"})  # no keys anywhere
    with pytest.raises(ValidationError):
        AuthConfig.model_validate({"mode": "none", "keys": [{"name": "a", "key": "k"}]})
    with pytest.raises(ValidationError):
        AuthConfig.model_validate({"mode": "api_keys", "keys": [{"name": "a"}]})  # neither key nor hash
    with pytest.raises(ValidationError):
        AuthConfig.model_validate({})  # the mode is never implied
    dup = AuthConfig.model_validate(
        {"mode": "api_keys", "keys": [{"name": "a", "key": "k"}, {"name": "b", "key": "k"}]}
    )
    with pytest.raises(ValueError, match="same key"):
        load_keys(dup)
    path = tmp_path / "router.yaml"
    path.write_text("static: {instances: [{url: 'http://127.0.0.1:1', model: m}]}\n")
    with pytest.raises(ValueError, match="set `auth` explicitly"):
        load_config(path)
    path.write_text("auth: {mode: none}\nstatic: {instances: [{url: 'http://127.0.0.1:1', model: m}]}\n")
    assert load_config(path).auth == AuthConfig(mode="none")


# ---- token bucket ----------------------------------------------------------------------------


def test_token_bucket_refills_continuously_and_says_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock)  # 10 tokens per second
    assert bucket.take(600) is None
    assert bucket.take(50) == pytest.approx(5.0)
    clock.now += 5.0
    assert bucket.take(50) is None
    bucket.give(-100)  # the request used 100 more than it was charged: the balance goes negative
    assert bucket.take(10) == pytest.approx(11.0)
    clock.now += 3600
    assert bucket.take(600) is None  # refills to capacity, never beyond
    assert bucket.take(1) is not None


def test_estimate_counts_prompt_and_asked_completion() -> None:
    assert estimate_tokens("completion", {"prompt": [1, 2, 3], "max_tokens": 10}, 99) == 13
    assert estimate_tokens("completion", {"prompt": "x" * 398}, 99) == 100 + 99  # '"' + 398 + '"' / 4
    chat = {"messages": [{"role": "user", "content": "y" * 40}], "max_completion_tokens": 5, "n": 2}
    assert len(orjson.dumps(chat["messages"])) == 70
    assert estimate_tokens("chat", chat, 99) == 18 + 10  # ceil(70 / 4) + 2 x 5


# ---- the gate, through an ASGI app -----------------------------------------------------------


async def test_missing_or_wrong_key_is_401_invalid_api_key_and_never_reaches_the_path() -> None:
    app, seen = _app(Gate(_config(), max_body_bytes=1 << 20))
    async with _client(app) as c:
        for key in (None, "sk-wrong", ALICE + "x", ""):
            r = await _post(c, key, max_tokens=1)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.json()["error"]["type"] == "invalid_request_error"
        r = await c.post(
            "/v1/completions", json={"model": "small"}, headers={"Authorization": f"Basic {ALICE}"}
        )
        assert r.status_code == 401
    assert seen == []


async def test_good_key_passes_without_its_authorization_header() -> None:
    app, seen = _app(Gate(_config(), max_body_bytes=1 << 20))
    async with _client(app) as c:
        r = await _post(c, BOB, max_tokens=3, model="large")
        assert r.status_code == 200
        r = await c.post("/v1/completions", json={"model": "x"}, headers={"authorization": f"bearer {ALICE}"})
        assert r.status_code == 404  # scheme is case-insensitive; alice may not use model x
    (kind, headers, body) = seen[0]
    assert kind == "completion" and body["model"] == "large"
    assert "authorization" not in headers  # the router's key is not sent on to engines


async def test_model_outside_the_allow_list_is_404_model_not_found() -> None:
    app, seen = _app(Gate(_config(), max_body_bytes=1 << 20))
    async with _client(app) as c:
        r = await _post(c, ALICE, model="large", max_tokens=1)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert (await _post(c, ALICE, model="small", max_tokens=1)).status_code == 200
    assert [b["model"] for _, _, b in seen] == ["small"]


async def test_body_limit_and_malformed_bodies_under_auth() -> None:
    app, seen = _app(Gate(_config(), max_body_bytes=100))
    async with _client(app) as c:
        r = await _post(c, ALICE, prompt="z" * 200)
        assert r.status_code == 413
    assert seen == []


async def test_rate_limit_429_with_retry_after_then_recovers_with_the_clock() -> None:
    clock = Clock()
    app, seen = _app(Gate(_config(), max_body_bytes=1 << 20, clock=clock))
    async with _client(app) as c:
        # "hi" is 1 token; 299 asked: each request is charged 300 of alice's 600 per minute.
        assert (await _post(c, ALICE, max_tokens=299)).status_code == 200
        assert (await _post(c, ALICE, max_tokens=299)).status_code == 200
        r = await _post(c, ALICE, max_tokens=299)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.headers["Retry-After"] == "30"  # 300 tokens at 10 per second
        assert (await _post(c, BOB, max_tokens=10_000)).status_code == 200  # bob has no limit
        clock.now += 30
        assert (await _post(c, ALICE, max_tokens=299)).status_code == 200
        r = await _post(c, ALICE, max_tokens=10_000)  # more than a minute's worth: never fits
        assert r.status_code == 429 and "Retry-After" not in r.headers
    assert len(seen) == 4


async def test_charge_is_reconciled_with_actual_usage_plain_and_streamed() -> None:
    clock = Clock()
    app, _ = _app(Gate(_config(), max_body_bytes=1 << 20, clock=clock), usage=lambda _: 20)
    async with _client(app) as c:
        # Each asks 499 (+1 prompt) but uses 20: the refund keeps alice well under her 600.
        for stream in (False, True, False, True, False):
            r = await _post(c, ALICE, max_tokens=499, stream=stream)
            assert r.status_code == 200, r.text
    app, _ = _app(Gate(_config(), max_body_bytes=1 << 20, clock=clock), usage=lambda _: 550)
    async with _client(app) as c:
        assert (await _post(c, ALICE, max_tokens=99, stream=True)).status_code == 200
        # Used 550, not the 100 charged: 50 left, so another 100 must wait 5 s.
        r = await _post(c, ALICE, max_tokens=99)
        assert r.status_code == 429 and r.headers["Retry-After"] == "5"


async def test_error_answers_are_refunded() -> None:
    clock = Clock()
    gate = Gate(_config(), max_body_bytes=1 << 20, clock=clock)

    async def failing(request: Request, kind: str, decoded: dict[str, Any] | None) -> Response:
        await request.body()
        return Response(b'{"error": {}}', status_code=503, media_type="application/json")

    async def completions(request: Request) -> Response:
        return await gate.serve(request, "completion", failing)

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    async with _client(app) as c:
        for _ in range(5):  # 5 x 300 > 600: only refunds keep these from a 429
            assert (await _post(c, ALICE, max_tokens=299)).status_code == 503


async def test_keys_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    app, _ = _app(Gate(_config(), max_body_bytes=1 << 20, clock=clock))
    async with _client(app) as c:
        await _post(c, ALICE, max_tokens=1)
        await _post(c, ALICE, model="large", max_tokens=1)
        await _post(c, ALICE, max_tokens=590)
        await _post(c, ALICE, max_tokens=590)
        await _post(c, "sk-attacker-guess", max_tokens=1)
        await _post(c, BOB, max_tokens=1)
    text = "\n".join(repr(r.__dict__) for r in caplog.records)
    assert "alice" in text and "model not allowed" in text and "token rate" in text
    for secret in (ALICE, BOB, "sk-attacker-guess", hashlib.sha256(BOB.encode()).hexdigest()):
        assert secret not in text
    assert ALICE not in repr(_config())  # nor in the config's repr


async def test_mode_none_passes_everything_through() -> None:
    app, seen = _app(Gate(AuthConfig(mode="none"), max_body_bytes=1 << 20))
    async with _client(app) as c:
        assert (await _post(c, None, max_tokens=1)).status_code == 200
        assert (await _post(c, "anything", max_tokens=1)).status_code == 200
    assert seen[1][1]["authorization"] == "Bearer anything"  # unchanged, as before auth existed


def test_hash_key_command_gives_the_digest_a_config_entry_takes() -> None:
    from typer.testing import CliRunner

    from flotilla.router.cli import app

    result = CliRunner().invoke(app, ["hash-key"], input=BOB + "\n")
    assert result.exit_code == 0
    entry = {"name": "bob", "sha256": result.stdout.strip()}
    (key,) = load_keys(AuthConfig.model_validate({"mode": "api_keys", "keys": [entry]}))
    assert Keyring([key]).lookup(BOB) == key


def test_router_run_refuses_a_config_file_without_auth(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flotilla.router.cli import app

    path = tmp_path / "router.yaml"
    path.write_text("static: {instances: [{url: 'http://127.0.0.1:1', model: m}]}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "set `auth` explicitly" in result.output


def test_config_errors_do_not_quote_keys() -> None:
    for bad in (
        {"name": "a", "key": ALICE, "sha256": "0" * 64},  # both: the entry-level check fails
        {"name": "a", "key": ALICE, "models": "small"},
        {"name": "a", "key": ALICE, "surprise": 1},
    ):
        with pytest.raises(ValidationError) as e:
            AuthConfig.model_validate({"mode": "api_keys", "keys": [bad]})
        assert ALICE not in str(e.value)
        with pytest.raises(ValidationError) as e:
            RouterConfig.model_validate({"auth": {"mode": "api_keys", "keys": [bad]}})
        assert ALICE not in str(e.value)


async def test_rotated_secret_is_picked_up_and_a_broken_one_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "alice").write_text(ALICE)
    entries = tmp_path / "keys.yaml"
    entries.write_text(f"- {{name: metered, key: {BOB}, tokens_per_minute: 600}}\n")
    clock = Clock()
    config = AuthConfig(mode="api_keys", keys_dir=str(secret), keys_file=str(entries))
    gate = Gate(config, max_body_bytes=1 << 20, clock=clock)
    assert gate.reloads
    app, _ = _app(gate)
    async with _client(app) as c:
        assert (await _post(c, BOB, max_tokens=499)).status_code == 200  # 100 left of 600
        (secret / "alice").write_text("sk-alice-rotated")
        (secret / "carol").write_text("sk-carol")
        await gate.reload()
        assert (await _post(c, ALICE, max_tokens=1)).status_code == 401
        assert (await _post(c, "sk-alice-rotated", max_tokens=1)).status_code == 200
        assert (await _post(c, "sk-carol", max_tokens=1)).status_code == 200
        # bob's entry did not change: his bucket (and what he spent) carries over the reload.
        assert (await _post(c, BOB, max_tokens=499)).status_code == 429
        entries.write_text(f"- {{name: metered, key: {BOB}, tokens_per_minute: [oops\n")
        await gate.reload()  # unparseable: keep the keys in use
        assert (await _post(c, "sk-carol", max_tokens=1)).status_code == 200
    text = "\n".join(repr(r.__dict__) for r in caplog.records)
    assert "not reloaded" in text and "carol" in text
    for secret_value in (ALICE, BOB, "sk-alice-rotated", "sk-carol"):
        assert secret_value not in text
    assert not Gate(_config(), max_body_bytes=1).reloads  # inline keys only: nothing to re-read
