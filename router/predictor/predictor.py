"""The router's view of a length predictor: a batch of requests in, scores and token quantiles out.

`Predictor` is the one Protocol the router codes against; `LearnedPredictor` serves a shipped
artifact (tokenizer + numpy encoder + linear head) and `PromptLengthPredictor` is the torch-free,
model-free fallback (longer prompts first: weak, tau ~0.1-0.15, but never absent). Predictions are
synchronous and CPU-bound: the router calls them through `batching.BatchingPredictor`, never on
its event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from flotilla.router.predictor import artifact, text
from flotilla.router.predictor.artifact import HeadSpec
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.encoder import NumpyEncoder
from flotilla.router.predictor.text import PredictorInput


@dataclass(frozen=True, slots=True)
class Prediction:
    """score orders requests (larger = longer); p50/p90 are output tokens, capped by max_tokens."""

    score: float
    p50: float
    p90: float


@runtime_checkable
class Predictor(Protocol):
    name: str

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]: ...


class LearnedPredictor:
    """A fine-tuned truncated MiniLM with a linear head, from an artifact. Thread-safe for reads;
    `with_head` returns a new predictor sharing the encoder (how refits are swapped in)."""

    def __init__(self, art: artifact.Artifact, head: HeadSpec | None = None) -> None:
        from tokenizers import Tokenizer

        self.artifact = art
        spec = art.manifest.encoder
        self.keep = spec.keep
        self.tokenizer = Tokenizer.from_str(art.tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.encoder = NumpyEncoder(art.weights, spec.vocab_size, spec.layers)
        wide = art.weights.get("wide")
        self._wide = None if wide is None else np.asarray(wide, dtype=np.float32)
        self._set_head(head or art.head)

    def _set_head(self, head: HeadSpec) -> None:
        self.head = head
        self.name = f"{self.artifact.ref}/head-v{head.version}"
        self._w = np.asarray(head.weights, dtype=np.float32)
        self._b = np.float32(head.bias)

    @classmethod
    def load(cls, ref: str | Path, root: Path = artifact.ARTIFACTS_DIR) -> LearnedPredictor:
        return cls(artifact.load(ref, root))

    def with_head(self, head: HeadSpec) -> LearnedPredictor:
        clone = object.__new__(LearnedPredictor)
        clone.__dict__.update(self.__dict__)
        clone._set_head(head)
        return clone

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self.tokenizer.encode_batch(
            [text.clip_text(t, self.keep) for t in texts], add_special_tokens=False
        )
        return [text.head_tail(e.ids, self.keep) for e in encs]

    def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray:
        """The head's input per request: pooled encoder output and cheap features (what is logged)."""
        if not batch:
            return np.zeros((0, len(self._w)), dtype=np.float32)
        pooled = self.encoder(self.token_ids([r.text for r in batch]))
        cols = [pooled, np.stack([text.cheap_features(r.text, r.prompt_tokens) for r in batch])]
        if self._wide is not None:
            wide = []
            for r in batch:
                ids = text.wide_ids(r.text, len(self._wide))
                wide.append(self._wide[ids].sum() / np.sqrt(max(len(ids), 1)))
            cols.append(np.array(wide, dtype=np.float32)[:, None])
        return np.concatenate(cols, axis=1)

    def score_embedded(self, z: np.ndarray) -> np.ndarray:
        out: np.ndarray = z @ self._w + self._b
        return out

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]:
        return _to_predictions(self.score_embedded(z), self.head.calibration, max_tokens)

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        return self.predict_embedded(self.embed(batch), [r.max_tokens for r in batch])


class PromptLengthPredictor:
    """Longer prompt, longer answer: the baseline, and the fallback when no artifact is loaded."""

    name = "prompt-length"

    def __init__(self, calibration: LengthCalibration) -> None:
        self.calibration = calibration

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        scores = np.log1p(np.array([r.prompt_tokens for r in batch], dtype=float))
        return _to_predictions(scores, self.calibration, [r.max_tokens for r in batch])


def _to_predictions(
    scores: np.ndarray, calibration: LengthCalibration, max_tokens: Sequence[int | None]
) -> list[Prediction]:
    caps = np.array([m or 0 for m in max_tokens], dtype=float)
    q = calibration.predict(scores, caps)
    return [
        Prediction(score=float(s), p50=float(a), p90=float(b))
        for s, a, b in zip(scores, q["p50"], q["p90"], strict=True)
    ]
