"""A tiny, random but complete predictor artifact (1 layer, own WordPiece vocabulary)."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from flotilla.router.predictor import artifact, text
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.encoder import HIDDEN
from flotilla.router.predictor.weights import quantize_rows

WORDS = [
    "write",
    "a",
    "function",
    "that",
    "explain",
    "the",
    "list",
    "python",
    "code",
    "in",
    "detail",
    "short",
    "story",
    "about",
    "why",
    "how",
]


def require(module: str) -> None:
    """Skip a test whose optional dependency is missing, except in CI (where it must be installed)."""
    if importlib.util.find_spec(module) is None and not os.environ.get("CI"):
        pytest.skip(f"{module} not installed (pip install -e '.[predictor]')")


def tiny_tokenizer_json() -> tuple[str, int]:
    require("tokenizers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[PAD]": 0, **{f"[unused{i}]": i for i in range(1, 100)}}
    vocab.update({"[UNK]": 100, "[CLS]": 101, "[SEP]": 102})
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok.to_str(), len(vocab)


@pytest.fixture
def vocab_words() -> list[str]:
    """The tiny tokenizer's words, for prompts it reads without [UNK]."""
    return list(WORDS)


def tiny_weights(vocab_size: int, keep: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    kept = np.array([0, 100, 101, 102, *range(103, vocab_size)])

    def mat(out_dim: int, in_dim: int) -> tuple[np.ndarray, np.ndarray]:
        return quantize_rows(rng.normal(0, 0.05, (out_dim, in_dim)))

    w: dict[str, np.ndarray] = {"vocab_kept": kept.astype(np.int32)}
    w["word_q"], w["word_s"] = mat(len(kept), HIDDEN)
    w["pos"] = rng.normal(0, 0.02, (keep + 2, HIDDEN)).astype(np.float32)
    w["emb_ln_w"], w["emb_ln_b"] = np.ones(HIDDEN, np.float32), np.zeros(HIDDEN, np.float32)
    for name, shape in {
        "qkv": (3 * HIDDEN, HIDDEN),
        "ao": (HIDDEN, HIDDEN),
        "fi": (4 * HIDDEN, HIDDEN),
        "fo": (HIDDEN, 4 * HIDDEN),
    }.items():
        w[f"l0.{name}_q"], w[f"l0.{name}_s"] = mat(*shape)
        w[f"l0.{name}_b"] = np.zeros(shape[0], np.float32)
    for name in ("ln1", "ln2"):
        w[f"l0.{name}_w"], w[f"l0.{name}_b"] = np.ones(HIDDEN, np.float32), np.zeros(HIDDEN, np.float32)
    return w


@pytest.fixture
def tiny_artifact(tmp_path: Path) -> Path:
    tok_json, vocab_size = tiny_tokenizer_json()
    keep = 16
    rng = np.random.default_rng(1)
    head = artifact.HeadSpec(
        kind="listmle",
        weights=rng.normal(0, 1, HIDDEN + text.N_CHEAP).tolist(),
        bias=0.0,
        calibration=LengthCalibration(
            centers=[-5.0, 0.0, 5.0], quantiles={"p50": [50.0, 200.0, 800.0], "p90": [100.0, 400.0, 1600.0]}
        ),
    )
    manifest = artifact.Manifest(
        name="tiny",
        version=3,
        model="llama-3.1-8b",
        encoder=artifact.EncoderSpec(base="random", layers=1, keep=keep, vocab_size=vocab_size),
    )
    return artifact.write(tmp_path / "artifacts", manifest, head, tiny_weights(vocab_size, keep), tok_json)
