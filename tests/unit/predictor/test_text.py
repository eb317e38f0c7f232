import numpy as np
import pytest

from flotilla.router.predictor import text


def test_head_tail_keeps_both_ends_and_wraps_in_special_tokens() -> None:
    ids = list(range(1000, 1100))
    out = text.head_tail(ids, 10)
    assert out == [text.CLS_ID, *range(1000, 1005), *range(1095, 1100), text.SEP_ID]
    assert text.head_tail([7, 8], 10) == [text.CLS_ID, 7, 8, text.SEP_ID]


def test_clip_text_bounds_tokenisation_work() -> None:
    long = "a" * 10_000 + "END"
    clipped = text.clip_text(long, 16)
    assert len(clipped) < 500 and clipped.endswith("END") and clipped.startswith("a")
    assert text.clip_text("short", 16) == "short"


def test_chat_to_text() -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]
    assert text.chat_to_text(msgs) == "be brief\nhi"


def test_vocab_map_sends_unseen_ids_to_unk() -> None:
    kept = text.VocabMap.keep_from([[200, 300]], vocab_size=400)
    vm = text.VocabMap(kept, 400)
    mapped = vm(np.array([[101, 200, 250, 300]]))
    assert mapped[0, 2] == vm(np.array([text.UNK_ID]))[0]
    assert len(set(mapped[0].tolist())) == 4
    with pytest.raises(ValueError):
        text.VocabMap(np.array([1, 2]), 400)


def test_wide_ids_are_stable_and_bounded() -> None:
    a = text.wide_ids("Write a Python function", 1 << 18)
    assert a.tolist() == text.wide_ids("write a python FUNCTION", 1 << 18).tolist()  # lower-cased
    assert len(a) == 4 + 3  # unigrams + bigrams
    assert a.max() < 1 << 18
    assert len(text.wide_ids("word " * 10_000, 1 << 18)) <= text.WIDE_MAX
