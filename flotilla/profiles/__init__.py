"""Engine step-time profiles: how long one continuous-batching step of an engine takes.

One model serves three users, so they agree on what an engine costs: the simulated engine
(`flotilla.enginesim`) sleeps for it, the fleet simulator advances its clock by it, and the GPU
calibration (`benchmarks/gpu_calibration`) fits its coefficients to measurements. A step runs
some prefill chunks and some decodes together, as vLLM's chunked prefill does:

    t = base_s
        + prefill_token_s  * prefill_tokens            (linear layers over new tokens)
        + prefill_attn_s   * prefill_attention_pairs   (sum over chunks of chunk_len * context_len)
        + decode_seq_s     * decode_seqs               (per-sequence overhead of a decode)
        + kv_token_s       * kv_tokens_read            (attention reads the decodes' KV cache)
        + compute_token_s  * max(0, prefill_tokens + decode_seqs - compute_knee_tokens)

The last term is the matrix products turning compute-bound: below `compute_knee_tokens` tokens a
step's cost is reading the weights once (inside base_s), above it every further token costs its
FLOPs. A linear model cannot bend there, and misses small prefill chunks by up to 22% on an H100
(benchmarks/gpu_calibration/README.md); both fields default to 0, which switches the term off.

Profiles ship as JSON files in `flotilla/profiles/data/`; each says where its numbers came from.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StepCoefficients(BaseModel):
    """Seconds per unit of work in one engine step (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_s: float = Field(ge=0)
    prefill_token_s: float = Field(ge=0)
    prefill_attn_s: float = Field(default=0.0, ge=0)
    decode_seq_s: float = Field(ge=0)
    kv_token_s: float = Field(default=0.0, ge=0)
    compute_token_s: float = Field(default=0.0, ge=0)
    compute_knee_tokens: int = Field(default=0, ge=0)


class EngineLimits(BaseModel):
    """The engine settings that bound a step (vLLM's names in comments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_seqs: int = Field(default=256, gt=0)  # --max-num-seqs
    max_num_batched_tokens: int = Field(default=8192, gt=0)  # --max-num-batched-tokens
    block_size: int = Field(default=16, gt=0)  # KV cache block size in tokens
    kv_cache_blocks: int = Field(default=8192, gt=0)  # KV capacity in blocks
    max_model_len: int = Field(default=8192, gt=0)  # --max-model-len


class StepTimeProfile(BaseModel):
    """A named, sourced step-time model of one engine on one kind of hardware."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    hardware: str
    source: str = Field(description="How and where the coefficients were measured.")
    coefficients: StepCoefficients
    limits: EngineLimits = EngineLimits()

    def step_time(
        self,
        *,
        prefill_tokens: int = 0,
        prefill_attention_pairs: int = 0,
        decode_seqs: int = 0,
        kv_tokens_read: int = 0,
    ) -> float:
        """Seconds one step takes; an empty step takes no time."""
        if prefill_tokens == 0 and decode_seqs == 0:
            return 0.0
        c = self.coefficients
        return (
            c.base_s
            + c.prefill_token_s * prefill_tokens
            + c.prefill_attn_s * prefill_attention_pairs
            + c.decode_seq_s * decode_seqs
            + c.kv_token_s * kv_tokens_read
            + c.compute_token_s * max(0, prefill_tokens + decode_seqs - c.compute_knee_tokens)
        )


def load_profile(name_or_path: str) -> StepTimeProfile:
    """Load a shipped profile by name (e.g. ``"h100-llama3-8b"``) or any profile JSON by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return StepTimeProfile.model_validate_json(path.read_text())
    shipped = resources.files(__package__).joinpath("data", f"{name_or_path}.json")
    if not shipped.is_file():
        raise FileNotFoundError(f"no step-time profile named {name_or_path!r}; shipped: {shipped_profiles()}")
    return StepTimeProfile.model_validate_json(shipped.read_text())


def shipped_profiles() -> list[str]:
    folder = resources.files(__package__).joinpath("data")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))
