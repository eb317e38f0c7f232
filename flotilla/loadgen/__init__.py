"""Open-loop load generation against OpenAI-compatible endpoints, and the live router benchmark.

`flotilla bench live` puts flotilla's router (each policy, slicing on and off) and the Rust routers
from PyPI (vllm-router, sglang-router) in front of the same engine processes in one run, replays a
trace or a Poisson stream through each in turn, and reports per-request streaming metrics as ratios
to a baseline. The pieces are separate so each can be tested alone: the workload (what to send and
when), the SSE reader (`stream`: one streamed request as the client saw it, shared with the chaos
workload and the local demo), the streaming client (one request's timings), the open loop (sending
on schedule), the summary (metrics of a set of records), the targets (how each router is started)
and the run (interleaving arms on shared engines).
"""
