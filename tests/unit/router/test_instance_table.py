from flotilla.router.instances import InstanceSpec, InstanceTable


def spec(i: int, model: str, slice_tokens: int = 0) -> InstanceSpec:
    return InstanceSpec(id=f"i{i}", url=f"http://x{i}", model=model, slice_tokens=slice_tokens)


def test_slice_tokens_per_model_follow_the_instance_set() -> None:
    table = InstanceTable(default_max_inflight=4)
    assert table.slice_tokens("a") == 0  # nothing discovered yet
    table.update([spec(0, "a"), spec(1, "a", 64), spec(2, "b")])
    assert (table.slice_tokens("a"), table.slice_tokens("b"), table.slice_tokens("c")) == (64, 0, 0)
    # A rollout changes the fleet's slice length: the kept instance's new spec counts.
    table.update([spec(1, "a", 32), spec(2, "b", 16)])
    assert (table.slice_tokens("a"), table.slice_tokens("b")) == (32, 16)
    table.get("i1").eject()  # type: ignore[union-attr]
    assert table.slice_tokens("a") == 32  # an ejection does not change the model's configuration
    table.update([spec(2, "b", 16)])
    assert table.slice_tokens("a") == 0
