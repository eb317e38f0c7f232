"""Slice-level scheduling in four parts: `decisions` (pure: which requests may be sliced, slice
budgets, the features a slice is dispatched with, between-slice placement; part of the routing
core), `continuation` (the engine loop: one client request as several engine calls, continued
exactly from token ids, with failover), `http_path` (the HTTP side of a sliced request) and
`http_output` (the client's one answer, in vLLM's shapes)."""
