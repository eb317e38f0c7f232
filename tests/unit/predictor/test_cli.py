from pathlib import Path

import numpy as np
import orjson
from typer.testing import CliRunner

from flotilla.predictor_training import data
from flotilla.predictor_training.cli import app
from flotilla.router.predictor.feature_log import FeatureLog
from flotilla.router.predictor.predictor import LearnedPredictor
from flotilla.router.predictor.text import PredictorInput

runner = CliRunner()


def _fake_castillo(folder: Path, words: list[str], n: int = 400) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    with (folder / data.MODEL_FILES["llama-3.1-8b"]).open("wb") as f:
        for i in range(n):
            k = int(rng.integers(3, 40))
            mu = 3 + k / 10
            f.write(
                orjson.dumps(
                    {
                        "prompt_id": f"p{i}",
                        "dataset": ["Alpaca", "Mbpp"][i % 2],
                        "prompt_text": " ".join(rng.choice(words, k)),
                        "input_size": k,
                        "output_sizes": np.exp(mu + rng.normal(0, 0.3, 10)).astype(int).tolist(),
                        "split": "validate",
                    }
                )
                + b"\n"
            )


def test_eval_writes_the_report(tiny_artifact: Path, tmp_path: Path, vocab_words: list[str]) -> None:
    _fake_castillo(tmp_path / "castillo", vocab_words)
    out = tmp_path / "bench"
    res = runner.invoke(
        app,
        [
            "eval",
            "--artifact",
            str(tiny_artifact),
            "--data-dir",
            str(tmp_path / "castillo"),
            "--out",
            str(out),
            "--latency-n",
            "40",
        ],
    )
    assert res.exit_code == 0, res.output
    report = (out / "RESULTS.md").read_text()
    assert "noise ceiling" in report and "prompt-length heuristic" in report and "Alpaca" in report
    assert "unbatched_cpu_p99_ms" in report
    assert (out / "results.json").is_file()
    assert (out / "tau_by_source.png").stat().st_size > 1000


def test_refit_accepts_a_head_that_fits_logged_traffic(
    tiny_artifact: Path, tmp_path: Path, vocab_words: list[str]
) -> None:
    pred = LearnedPredictor.load(tiny_artifact)
    rng = np.random.default_rng(0)
    log = FeatureLog()
    reqs = [
        PredictorInput(" ".join(rng.choice(vocab_words, int(rng.integers(2, 30)))), 5) for _ in range(600)
    ]
    z = pred.embed(reqs)
    # traffic whose length follows a direction the random head does not know
    direction = rng.normal(size=z.shape[1])
    lengths = np.exp(5 + 2 * (z @ direction) / np.std(z @ direction))
    for i in range(len(reqs)):
        log.record("llama-3.1-8b", z[i], int(lengths[i]), float(i))
    log.save(tmp_path / "log.npz")
    args = [
        "refit",
        "--artifact",
        str(tiny_artifact),
        "--log",
        str(tmp_path / "log.npz"),
        "--model",
        "llama-3.1-8b",
    ]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "heads")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "heads" / "head-v2.json").is_file()
    res = runner.invoke(
        app,
        ["refit", "--artifact", str(tiny_artifact), "--log", str(tmp_path / "log.npz"), "--model", "other"],
    )
    assert res.exit_code == 3
    assert "too little traffic" in res.output


def test_train_rejects_unknown_variants() -> None:
    res = runner.invoke(app, ["train", "--variant", "nope"])
    assert res.exit_code != 0
