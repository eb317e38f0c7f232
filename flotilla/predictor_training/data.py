"""Loading the CASTILLO prompts and splitting them by prompt, the same way for every model.

The split is a pure function of the prompt id and a seed (a hash, not a shuffle), so a prompt held
out for Llama-3.1-8B is held out for Mistral-7B too, and adding rows never moves an old prompt
between train and held-out. The authors' `train` split holds only code datasets (DS1000, Mbpp,
BigCodeBench), so part of `validate` must join training or the chat sources would never be seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import orjson

# Relative to the repository root, as the shared-data README asks.
CASTILLO_DIR = Path("../shared/data/castillo")
MODEL_FILES = {
    "llama-3.1-8b": "meta-llama--Llama-3.1-8B-Instruct.jsonl",
    "mistral-7b": "mistralai--Mistral-7B-Instruct-v0.3.jsonl",
}


class Part(StrEnum):
    """Which use a prompt is put to: fitting, calibrating (and model selection), or evaluation."""

    FIT = "fit"
    CALIBRATE = "calibrate"
    HELDOUT = "heldout"


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """One prompt with the lengths of the responses that one model sampled for it."""

    prompt_id: str
    dataset: str
    text: str
    input_tokens: int
    output_sizes: tuple[int, ...]
    split: str

    @property
    def mean_output(self) -> float:
        return float(np.mean(self.output_sizes))


def load_castillo(path: Path) -> list[PromptRecord]:
    """Read one model's CASTILLO jsonl file (one prompt a line)."""
    records = []
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            row = orjson.loads(line)
            records.append(
                PromptRecord(
                    prompt_id=str(row["prompt_id"]),
                    dataset=str(row["dataset"]),
                    text=str(row["prompt_text"]),
                    input_tokens=int(row["input_size"]),
                    output_sizes=tuple(int(x) for x in row["output_sizes"]),
                    split=str(row["split"]),
                )
            )
    return records


def model_path(model: str, data_dir: Path = CASTILLO_DIR) -> Path:
    """The data file of a model named by its short name (see MODEL_FILES)."""
    try:
        return data_dir / MODEL_FILES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {sorted(MODEL_FILES)}") from None


def _unit_hash(prompt_id: str, seed: int, salt: str) -> float:
    digest = hashlib.sha256(f"{seed}:{salt}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_part(
    record: PromptRecord, seed: int = 0, heldout_of_validate: float = 0.4, calibrate: float = 0.15
) -> Part:
    """Held out: a fixed share of the authors' `validate` prompts; of the rest, a share calibrates."""
    if record.split != "train" and _unit_hash(record.prompt_id, seed, "heldout") < heldout_of_validate:
        return Part.HELDOUT
    if _unit_hash(record.prompt_id, seed, "calibrate") < calibrate:
        return Part.CALIBRATE
    return Part.FIT


def split_records(
    records: Iterable[PromptRecord], seed: int = 0, heldout_of_validate: float = 0.4, calibrate: float = 0.15
) -> dict[Part, list[PromptRecord]]:
    parts: dict[Part, list[PromptRecord]] = {p: [] for p in Part}
    for r in records:
        parts[assign_part(r, seed, heldout_of_validate, calibrate)].append(r)
    return parts


def sampled_truth(records: Sequence[PromptRecord], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One sampled length per prompt (what a request really produces) and the mean of the other nine.

    The second is the noise ceiling's predictor: it knows the prompt's true distribution but not
    which sample this request drew.
    """
    rng = np.random.default_rng(seed)
    one = np.empty(len(records))
    rest = np.empty(len(records))
    for i, r in enumerate(records):
        k = int(rng.integers(len(r.output_sizes)))
        sizes = np.asarray(r.output_sizes, dtype=float)
        one[i] = sizes[k]
        rest[i] = (sizes.sum() - sizes[k]) / (len(sizes) - 1)
    return one, rest
