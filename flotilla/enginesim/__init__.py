"""A vLLM-compatible engine process that runs without a GPU.

Neither vLLM (no CPU wheel here) nor llm-d-inference-sim (Go proxy refuses it) can run on the
development machine, yet the router, the slicing scheduler and the benchmarks need a real engine on
the data path: a separate process with vLLM's OpenAI server API, vLLM's metric names, continuous
batching, chunked prefill, a paged KV cache with prefix caching, and step times taken from a
`flotilla.profiles.StepTimeProfile`. This package is that engine; only the "model" is fake: a
deterministic function of the recent token ids (see `textmodel`), so that greedy continuation from
``prompt_token_ids + token_ids`` reproduces an unsliced generation exactly, as it does on vLLM.

Run it with ``python -m flotilla.enginesim --host 127.0.0.1 --port 8001 --model NAME``.
"""
