"""``python -m flotilla.enginesim --host IP --port PORT --model NAME [...]``: serve one engine."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from flotilla.enginesim.app import EngineSimSettings, FlagTiming, build_app


def parse_args(argv: list[str]) -> tuple[str, int, EngineSimSettings]:
    p = argparse.ArgumentParser(prog="python -m flotilla.enginesim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--profile", help="shipped step-time profile name or a profile JSON path")
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int, help="token budget per step (chunked prefill)")
    p.add_argument("--kv-cache-blocks", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply every step time (0: no sleeping)")
    p.add_argument("--seed", type=int, default=0, help="the fake model's weights, and unseeded sampling")
    p.add_argument("--mean-output-tokens", type=float, default=128.0, help="mean length when EOS is allowed")
    p.add_argument(
        "--decode-step-ms", type=float, help="fixed cost of a step (overrides the default profile)"
    )
    p.add_argument("--decode-seq-ms", type=float, help="cost per decoding sequence in a step")
    p.add_argument("--prefill-token-ms", type=float, help="cost per prefilled token in a step")
    a = vars(p.parse_args(argv))
    host, port = a.pop("host"), a.pop("port")
    # every other flag is a settings field of the same name (extra="forbid" catches a mismatch)
    flags = {k: v for k in FlagTiming.model_fields if (v := a.pop(k)) is not None}
    return host, port, EngineSimSettings(**a, timing=FlagTiming(**flags) if flags else None)


async def serve(host: str, port: int, settings: EngineSimSettings) -> None:
    import uvicorn

    config = uvicorn.Config(build_app(settings), host=host, port=port, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    host, port, settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:  # optional: the plain asyncio loop works, only slower
        asyncio.run(serve(host, port, settings))
    else:
        uvloop.run(serve(host, port, settings))


if __name__ == "__main__":
    main()
