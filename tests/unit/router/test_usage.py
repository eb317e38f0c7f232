from flotilla.router.usage import stream_usage_tokens, usage_tokens

USAGE = b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}'


def test_usage_of_a_json_answer() -> None:
    assert usage_tokens(USAGE, "completion_tokens") == 7
    assert usage_tokens(USAGE, "total_tokens") == 12
    assert usage_tokens(b'{"usage": null}', "total_tokens") is None
    assert usage_tokens(b'{"usage": {"total_tokens": "12"}}', "total_tokens") is None
    assert usage_tokens(b"[1, 2]", "total_tokens") is None  # JSON, but not an object
    assert usage_tokens(b"not json", "total_tokens") is None


def test_usage_of_a_stream_chunk_is_its_last_usage_event() -> None:
    later = USAGE.replace(b"7", b"9").replace(b"12", b"14")
    chunk = b'data: {"choices": [{"text": "x"}]}\n\ndata: ' + USAGE + b"\n\ndata: " + later + b"\n\n"
    assert stream_usage_tokens(chunk, "completion_tokens") == 9
    assert stream_usage_tokens(chunk + b"data: [DONE]\n\n", "total_tokens") == 14
    # Events without usage, or whose usage is null (OpenAI sends that with include_usage), give None.
    assert stream_usage_tokens(b'data: {"choices": [], "usage": null}\n\n', "total_tokens") is None
    assert stream_usage_tokens(b'data: {"completion_tokens": 3', "completion_tokens") is None
