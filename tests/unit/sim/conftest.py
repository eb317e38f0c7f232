import pytest

from flotilla.profiles import EngineLimits, StepCoefficients, StepTimeProfile


@pytest.fixture
def profile() -> StepTimeProfile:
    return StepTimeProfile(
        name="unit",
        model="m",
        hardware="none",
        source="unit test numbers",
        coefficients=StepCoefficients(
            base_s=0.005, prefill_token_s=1e-4, prefill_attn_s=1e-8, decode_seq_s=1e-4, kv_token_s=1e-7
        ),
        limits=EngineLimits(
            max_num_seqs=32,
            max_num_batched_tokens=512,
            block_size=16,
            kv_cache_blocks=2048,
            max_model_len=4096,
        ),
    )
