"""Entry point for the one training run on the GPU machine (see README.md, "Training on a GPU").

It runs with flotilla on PYTHONPATH as a package view (never the repo root) and with the data and
the encoder carried in `build/predictor_carry/`. Output: artifacts as tar files plus sweep.json.
"""

from __future__ import annotations

import argparse
import tarfile
import time
from pathlib import Path

from flotilla.predictor_training.sweep import run_sweep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--carry", type=Path, default=Path("build/predictor_carry"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--ship", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["llama-3.1-8b", "mistral-7b"])
    args = ap.parse_args()
    work = Path("/tmp/predictor_out")
    work.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "sweep.log").open("a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    report = run_sweep(
        args.models,
        args.carry / "castillo",
        args.carry / "minilm",
        work,
        device=args.device,
        budget_s=args.budget_s,
        ship=args.ship,
        log=log,
    )
    (args.out / "sweep.json").write_text((work / "sweep.json").read_text())
    for model in report.values():
        for shipped in model["shipped"]:
            path = Path(shipped)
            with tarfile.open(args.out / f"{path.name}.tar", "w") as tar:
                tar.add(path, arcname=path.name)


if __name__ == "__main__":
    main()
