"""Pick the artifact each model ships, from a training run's candidates, by tau and measured CPU cost.

    .venv/bin/python benchmarks/predictor/select_artifacts.py RUN_DIR [--max-cpu-ms 5]

RUN_DIR holds what the GPU run returned (`*.tar` candidates and `sweep.json`). Each candidate's CPU
cost is measured here (one BLAS thread, batches of 32 and single requests); among those within
the budget the best calibration-set tau wins (held-out prompts are not looked at). The winner is
copied to router/predictor/artifacts/<model>-v<N> (N = next free version) and sweep.json to
benchmarks/predictor/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from flotilla.predictor_training import data
from flotilla.predictor_training.evaluate import measure_latency
from flotilla.router.predictor import artifact
from flotilla.router.predictor.predictor import LearnedPredictor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--max-cpu-ms", type=float, default=5.0)
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/castillo"))
    ap.add_argument("--dest", type=Path, default=artifact.ARTIFACTS_DIR)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predictor-candidates-"))
    for tar in sorted(args.run_dir.glob("*.tar")):
        with tarfile.open(tar) as t:
            t.extractall(work, filter="data")
    chosen: dict[str, tuple[float, Path, dict[str, float]]] = {}
    for cand in sorted(work.iterdir()):
        pred = LearnedPredictor.load(cand)
        m = pred.artifact.manifest
        held = data.split_records(data.load_castillo(data.model_path(m.model, args.data_dir)))[
            data.Part.HELDOUT
        ]
        lat = measure_latency(pred, held, n=150)
        cost = max(lat["unbatched_cpu_p50_ms"], lat["batch32_cpu_per_request_p50_ms"])
        tau = float(m.metrics["calibrate_tau"])
        print(f"{cand.name}: {m.metrics['name']} calibrate tau {tau:.3f}, cpu {cost:.2f} ms/request")
        if cost <= args.max_cpu_ms and (m.model not in chosen or tau > chosen[m.model][0]):
            chosen[m.model] = (tau, cand, lat)
    for model, (tau, cand, _) in chosen.items():
        versions = [int(p.name.rsplit("-v", 1)[1]) for p in args.dest.glob(f"{model}-v*")]
        version = max(versions, default=0) + 1
        dest = args.dest / f"{model}-v{version}"
        shutil.copytree(cand, dest)
        manifest = artifact.Manifest.model_validate_json((dest / "manifest.json").read_bytes())
        manifest = manifest.model_copy(update={"name": model, "version": version})
        (dest / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
        print(f"{model}: shipped {cand.name} ({manifest.metrics['name']}, calibrate tau {tau:.3f}) as {dest}")
    sweep = args.run_dir / "sweep.json"
    if sweep.is_file():
        bench = Path(__file__).parent
        shutil.copy(sweep, bench / "sweep.json")
        for extra in ("sweep.log",):
            if (args.run_dir / extra).is_file():
                shutil.copy(args.run_dir / extra, bench / extra)
    print(json.dumps({m: str(c[1].name) for m, c in chosen.items()}))


if __name__ == "__main__":
    main()
