"""Write a tiny Llama that real vLLM serves on a CPU: random weights, a tokenizer trained here.

Run by the engine virtualenv's interpreter (it has torch and transformers; the project's own
environment does not): ``<venv>/bin/python tinymodel.py --out DIR``. Nothing is downloaded: the
tokenizer is a byte-level BPE trained on text every Python installation ships (its licence and a
fixed list of standard-library sources) plus a paragraph of non-ASCII text, so that multi-byte
characters are split across tokens and slice boundaries can fall inside one. Weights come from a
fixed seed, so the same script writes the same model on every machine.

The output is what `from_pretrained` reads: config.json, model.safetensors, generation_config.json,
tokenizer.json, tokenizer_config.json (with the chat template). This file imports nothing from
flotilla on purpose: the engine environment does not have it.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path

VOCAB_SIZE = 2048
SIZES = {
    # Tests: as small as vLLM serves, so engines start fast and steps cost little.
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
    # Benchmarks: engine steps long enough (milliseconds to tens of them on one core) that vLLM's
    # and the router's per-token Python work, which shares this machine's two cores, does not
    # dominate them, as an engine's own time dominates on a GPU.
    "bench": {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8},
}
MAX_POSITIONS = 16384
SEED = 0
INIT_RANGE = 0.3
SPECIAL = ["<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Standard-library sources present in every CPython 3.11 (a fixed list: the corpus, hence the
# tokenizer, must not depend on what else is installed).
STDLIB_SOURCES = ("this.py", "textwrap.py", "string.py", "difflib.py", "json/decoder.py", "argparse.py")
NON_ASCII = (
    "Ça va très bien, merci ! Größe, Fußgänger, naïve café, smörgåsbord. "
    "Ελληνικά γράμματα και λέξεις. Русский текст для проверки. "
    "日本語の文章と漢字、ひらがな、カタカナ。中文字符和标点符号。한국어 문장입니다. "
    "Emoji: 🚀🌍✨🙂 and symbols: € £ ¥ © ® ™ — “quotes” \u2018single\u2019 …"
)


def corpus() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(lib / "LICENSE.txt").read_text(encoding="utf-8")]
    texts += [(lib / name).read_text(encoding="utf-8") for name in STDLIB_SOURCES]
    # Repeated so its merges win places in the vocabulary beside the English text's.
    texts += [NON_ASCII] * 200
    return texts


def build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = MAX_POSITIONS
    fast.save_pretrained(out)


def build_model(out: Path, size: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = json.loads((out / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    ids = [*vocab.values(), *(t["id"] for t in tokenizer.get("added_tokens", []))]
    torch.manual_seed(SEED)
    dims = SIZES[size]
    config = LlamaConfig(
        vocab_size=max(ids) + 1,
        **dims,
        intermediate_size=4 * dims["hidden_size"],
        num_key_value_heads=dims["num_attention_heads"],
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["</s>"],
        tie_word_embeddings=False,
        # At the default 0.02 a random model's greedy output settles into one repeated token
        # within a few steps; at 0.3 it stays varied for hundreds (measured on 100-token runs),
        # which the stop-string and multi-byte tests need.
        initializer_range=INIT_RANGE,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(args.out)
    build_model(args.out, args.size)
    print(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
