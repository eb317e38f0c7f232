"""flotilla.router: one OpenAI-compatible endpoint in front of a fleet of engines.

The request path (`proxy`) asks the admission queue (`admission`) for a lease on an instance; the
queue asks the model's balancing policy (`policies`) to rank a snapshot of instance state
(`state`), which combines what the scraper read from each engine's /metrics with the router's own
accounting of requests in flight. Discovery (`discovery`) keeps the instance set current.
"""
