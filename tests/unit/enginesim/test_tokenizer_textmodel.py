import random

from hypothesis import given
from hypothesis import strategies as st

from flotilla.enginesim.textmodel import TextModel
from flotilla.enginesim.tokenizer import EOS_TOKEN_ID, Tokenizer


@given(st.text())
def test_any_text_round_trips(text: str) -> None:
    tok = Tokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_vocabulary_words_are_single_tokens() -> None:
    tok = Tokenizer()
    ids = tok.encode("hello ba bako")
    assert ids[-2:] == [tok.word_id(0), tok.encode(" bako")[0]]
    assert len(tok.encode(" bako")) == 1


def _greedy(model: TextModel, context: list[int], steps: int) -> list[int]:
    out: list[int] = []
    for _ in range(steps):
        t = model.next_token(context + out, temperature=0, rng=random.Random(0), allow_eos=True)
        out.append(t)
        if t == EOS_TOKEN_ID:
            break
    return out


def test_greedy_continuation_reproduces_unsliced_generation() -> None:
    tok = Tokenizer()
    model = TextModel(tok, seed=3, mean_output_tokens=40)
    prompt = tok.encode("the quick brown fox")
    full = _greedy(model, prompt, 500)
    assert full[-1] == EOS_TOKEN_ID, "a geometric length with mean 40 ends within 500 tokens"
    for cut in (1, 7, len(full) // 2, len(full) - 1):
        assert full[:cut] + _greedy(model, prompt + full[:cut], 500) == full


def test_lengths_vary_by_prompt_and_average_near_the_mean() -> None:
    tok = Tokenizer()
    model = TextModel(tok, seed=1, mean_output_tokens=30)
    lengths = [len(_greedy(model, tok.encode(f"prompt number {i}"), 2000)) for i in range(300)]
    assert len(set(lengths)) > 30
    assert 22 < sum(lengths) / len(lengths) < 40


def test_seed_changes_the_model_and_temperature_samples() -> None:
    tok = Tokenizer()
    ctx = tok.encode("abc")
    a, b = TextModel(tok, seed=1), TextModel(tok, seed=2)
    assert a.candidates(ctx) != b.candidates(ctx)
    rng = random.Random(5)
    samples = {a.next_token(ctx, temperature=1.0, rng=rng, allow_eos=False) for _ in range(200)}
    assert samples <= set(a.candidates(ctx)) and len(samples) > 1
