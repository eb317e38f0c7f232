from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.model_routing import ModelRouting


def spec(i: int, model: str) -> InstanceSpec:
    return InstanceSpec(id=f"i{i}", url=f"http://x{i}", model=model)


def test_routing_per_model_is_what_discovery_resolved() -> None:
    table = InstanceTable(default_max_inflight=4)
    assert table.slice_tokens("a") == 0  # nothing discovered yet
    assert table.routing("a") == ModelRouting()
    table.update([spec(0, "a"), spec(1, "a"), spec(2, "b")], {"a": ModelRouting(slice_tokens=64)})
    assert (table.slice_tokens("a"), table.slice_tokens("b"), table.slice_tokens("c")) == (64, 0, 0)
    # A rollout changes the fleet's slice length: the new settings count, for kept instances too.
    kept = table.get("i1")
    table.update(
        [spec(1, "a"), spec(2, "b")], {"a": ModelRouting(slice_tokens=32), "b": ModelRouting(slice_tokens=16)}
    )
    assert table.get("i1") is kept
    assert (table.slice_tokens("a"), table.slice_tokens("b")) == (32, 16)
    table.get("i1").eject()  # type: ignore[union-attr]
    assert table.slice_tokens("a") == 32  # an ejection does not change the model's configuration
    table.update([spec(2, "b")], {"b": ModelRouting(slice_tokens=16)})
    assert table.slice_tokens("a") == 0
