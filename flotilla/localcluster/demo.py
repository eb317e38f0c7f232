"""`make demo` / `flotilla demo` (placeholder until the harness lands)."""


def run_demo() -> None:
    raise SystemExit("flotilla demo: not implemented yet")
