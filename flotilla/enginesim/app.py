"""Build an engine and its HTTP app from command-line settings (the composition root)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette

from flotilla.enginesim.engine import Engine
from flotilla.enginesim.metrics import EngineMetrics
from flotilla.enginesim.server import EngineServer
from flotilla.enginesim.textmodel import TextModel
from flotilla.enginesim.tokenizer import Tokenizer
from flotilla.profiles import EngineLimits, StepCoefficients, StepTimeProfile, load_profile, shipped_profiles

# Used when no --profile is given, once the GPU calibration has shipped it (see README.md).
DEFAULT_PROFILE = "h100-llama3-8b"


class FlagTiming(BaseModel):
    """Explicit per-step latencies, for when no measured profile is wanted or available."""

    model_config = ConfigDict(extra="forbid")

    decode_step_ms: float = Field(default=10.0, ge=0)
    decode_seq_ms: float = Field(default=0.05, ge=0)
    prefill_token_ms: float = Field(default=0.05, ge=0)

    def profile(self, model: str) -> StepTimeProfile:
        return StepTimeProfile(
            name="flags",
            model=model,
            hardware="none (flotilla.enginesim)",
            source="flags --decode-step-ms/--decode-seq-ms/--prefill-token-ms (not a measurement)",
            coefficients=StepCoefficients(
                base_s=self.decode_step_ms / 1000,
                prefill_token_s=self.prefill_token_ms / 1000,
                decode_seq_s=self.decode_seq_ms / 1000,
            ),
        )


class EngineSimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    profile: str | None = None
    timing: FlagTiming | None = None
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    kv_cache_blocks: int | None = Field(default=None, gt=0)
    block_size: int | None = Field(default=None, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    time_scale: float = Field(default=1.0, ge=0)
    seed: int = 0
    mean_output_tokens: float = Field(default=128.0, ge=1)

    def resolve_profile(self) -> StepTimeProfile:
        """--profile wins; then explicit timing flags; then the shipped default; then flag defaults."""
        if self.profile is not None:
            return load_profile(self.profile)
        if self.timing is None and DEFAULT_PROFILE in shipped_profiles():
            return load_profile(DEFAULT_PROFILE)
        return (self.timing or FlagTiming()).profile(self.model)

    def resolve_limits(self, profile: StepTimeProfile) -> EngineLimits:
        overrides = self.model_dump(include=set(EngineLimits.model_fields), exclude_none=True)
        limits = profile.limits.model_copy(update=overrides)
        # A sequence must fit the KV cache on its own, as vLLM checks at start-up.
        capacity = limits.kv_cache_blocks * limits.block_size
        return limits.model_copy(update={"max_model_len": min(limits.max_model_len, capacity)})


def build_server(settings: EngineSimSettings) -> EngineServer:
    profile = settings.resolve_profile()
    limits = settings.resolve_limits(profile)
    tokenizer = Tokenizer()
    cache_info = {
        "block_size": str(limits.block_size),
        "num_gpu_blocks": str(limits.kv_cache_blocks),
        "enable_prefix_caching": "True",
        "cache_dtype": "auto",
    }
    metrics = EngineMetrics(CollectorRegistry(), model_name=settings.model, cache_info=cache_info)
    engine = Engine(
        model=TextModel(tokenizer, seed=settings.seed, mean_output_tokens=settings.mean_output_tokens),
        tokenizer=tokenizer,
        profile=profile,
        limits=limits,
        metrics=metrics,
        time_scale=settings.time_scale,
    )
    return EngineServer(engine, model_name=settings.model, seed=settings.seed)


def build_app(settings: EngineSimSettings) -> Starlette:
    return build_server(settings).app()
