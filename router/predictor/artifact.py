"""Versioned predictor artifacts: what ships in the repo and what the router loads at start.

Layout: `<root>/<name>-v<N>/` with `manifest.json` (encoder shape, metrics, self-test), `weights.npz`
(the int8 encoder), `head.json` (the linear head and its length calibration; the only part that
online refits replace) and `tokenizer.json.gz` (MiniLM's WordPiece tokenizer). A name alone loads
its highest version, so a fleet's `spec.router.predictor` can pin `llama-3.1-8b-v1` or follow
`llama-3.1-8b`.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.router.predictor.calibration import LengthCalibration

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
_VERSIONED = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")


class EncoderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str
    layers: int
    keep: int
    vocab_size: int = 30522


class SelfTestCase(BaseModel):
    """A prompt and the score the training framework gave it: serving must reproduce it."""

    model_config = ConfigDict(extra="forbid")

    text: str
    prompt_tokens: int
    score: float


class HeadSpec(BaseModel):
    """A linear ranking head over [pooled embedding, cheap features], with its calibration."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    version: int = 1
    weights: list[float]
    bias: float
    calibration: LengthCalibration
    trained_on: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    model: str
    encoder: EncoderSpec
    metrics: dict[str, Any] = Field(default_factory=dict)
    selftest: list[SelfTestCase] = Field(default_factory=list)


class Artifact:
    """An artifact read from disk (weights stay numpy arrays; nothing here needs torch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = Manifest.model_validate_json((path / "manifest.json").read_bytes())
        self.head = HeadSpec.model_validate_json((path / "head.json").read_bytes())
        with np.load(path / "weights.npz") as npz:
            self.weights = {k: npz[k] for k in npz.files}
        self.tokenizer_json = gzip.decompress((path / "tokenizer.json.gz").read_bytes()).decode()

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}-v{self.manifest.version}"


def resolve(ref: str | Path, root: Path = ARTIFACTS_DIR) -> Path:
    """A directory path, `<name>-v<N>`, or `<name>` (its highest version under root)."""
    candidate = Path(ref)
    if (candidate / "manifest.json").is_file():
        return candidate
    if (root / str(ref) / "manifest.json").is_file():
        return root / str(ref)
    versions = []
    for d in root.iterdir() if root.is_dir() else []:
        m = _VERSIONED.match(d.name)
        if m and m["name"] == str(ref) and (d / "manifest.json").is_file():
            versions.append((int(m["version"]), d))
    if not versions:
        raise FileNotFoundError(f"no predictor artifact {ref!r} under {root}")
    return max(versions)[1]


def load(ref: str | Path, root: Path = ARTIFACTS_DIR) -> Artifact:
    return Artifact(resolve(ref, root))


def write(
    dest: Path,
    manifest: Manifest,
    head: HeadSpec,
    weights: dict[str, np.ndarray],
    tokenizer_json: str,
) -> Path:
    """Write an artifact directory `<dest>/<name>-v<version>` and return it."""
    out = dest / f"{manifest.name}-v{manifest.version}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
    (out / "head.json").write_text(head.model_dump_json(indent=1) + "\n")
    _savez(out / "weights.npz", **weights)
    (out / "tokenizer.json.gz").write_bytes(gzip.compress(tokenizer_json.encode(), mtime=0))
    return out


def _savez(path: Path, **arrays: np.ndarray) -> None:
    # numpy's stub types **kwds as if they could only be `allow_pickle`.
    save: Any = np.savez_compressed
    save(path, **arrays)
