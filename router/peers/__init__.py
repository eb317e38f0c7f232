"""Router replicas that act as one: their routing state shared over NATS (`link.py`, `state.py`).

Off unless the configuration has `peers:`; with it, each replica publishes its own in-flight and
predicted load per instance, its placements (prefix indexes) and its rate-limit charges, and folds
the others' into what its policies and buckets see (`InstanceRecord.peer`, `Gate.peer_charge`).
"""
