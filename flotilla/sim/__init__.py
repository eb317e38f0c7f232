"""The fleet simulator: a discrete-event model of N vLLM-like engines behind the router's policies.

Why a simulator: routing policies are compared on the same trace at many loads, side by side, in
seconds rather than GPU-hours, and against an oracle that knows true output lengths. The engines
are modelled step by step (continuous batching, chunked prefill, paged KV with prefix caching and
recompute preemption) and timed by the same `flotilla.profiles` step-time model the enginesim
process sleeps for; the router part reuses the router's own classes unchanged (policies, the
instance records that merge scrapes with accounting, the queue orders). Time is virtual (a heap of
events, no asyncio), so a run is deterministic for a seed.

Modules: `engine.py` + `kv.py` (one engine), `router.py` (the router's policies and admission),
`simulator.py` (the event loop), `slices.py` (slice-level scheduling with the router's own
`flotilla.router.slicing.decisions` decisions), `faults.py` (engines killed, drained, added), `workloads.py`
(traces), `capacity.py` (the load axis), `metrics.py`; the benchmarks behind `flotilla bench sim`,
`flotilla bench sim faults` and `flotilla bench slicing` are `bench.py`, `faults_bench.py` and
`slicing_bench.py`.
"""
