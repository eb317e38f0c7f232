"""The installed engine environment and models (`make vllm`): the models are what tinymodel.py
writes, and the load generator's words are one token each for their tokenizer."""

from __future__ import annotations

import json

import pytest

from flotilla.loadgen.workload import PromptWriter
from flotilla.testing import in_ci
from flotilla.vllmcpu.install import MODEL_SIZES, VllmInstall, VllmUnavailable, ensure_vllm
from flotilla.vllmcpu.vocabulary import one_token_words


@pytest.fixture(scope="module")
def install() -> VllmInstall:
    try:
        return ensure_vllm(install=in_ci())
    except VllmUnavailable as exc:
        if in_ci():
            raise
        pytest.skip(str(exc))


def test_models_have_the_sizes_asked_for(install: VllmInstall) -> None:
    hidden = {
        s: json.loads((install.model(s) / "config.json").read_text())["hidden_size"] for s in MODEL_SIZES
    }
    assert hidden == {"tiny": 128, "bench": 512}
    assert (install.model("tiny") / "tokenizer.json").read_bytes() == (
        install.model("bench") / "tokenizer.json"
    ).read_bytes()  # one tokenizer: prompts and words serve both


def test_prompts_in_one_token_words_have_exact_lengths(install: VllmInstall) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(install.model("bench") / "tokenizer.json"))
    words = one_token_words(install.model("bench"))
    writer = PromptWriter(salt=7, words=words)
    for blocks, tokens in (((1, 2), 700), ((3,), 1), ((4, 5, 6), 1536)):
        text = writer.prompt(blocks, tokens)
        assert len(tokenizer.encode(text, add_special_tokens=False).ids) == tokens
