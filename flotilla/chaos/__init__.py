"""Faults under load (issue 10): replay a real trace through the router on the local control plane
with engines, inject one fault at a time, and measure what the clients saw.

`workload` turns a trace into a steady open-loop load and checks every streamed answer against the
simulated engine's deterministic model (a resumed stream must be token-for-token the answer an
unfaulted run gives); `rig` stands the system up in one namespace (operator, routers, engines, a
fleet); `faults` are the six injections; `report` summarises and writes the benchmark files;
`runner` is `flotilla bench chaos`. The e2e tests (e2e/chaos) use the same pieces with short phases.
"""
