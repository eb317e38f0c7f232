"""How each arm's router is configured and started."""

from __future__ import annotations

from pathlib import Path

from flotilla.loadgen.targets import Arm, backlog_arms, command, default_arms, flotilla_config
from flotilla.router.config import RouterConfig

ENGINES = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]


def test_default_arms_cover_the_issue() -> None:
    names = [a.name for a in default_arms((32, 128))]
    for wanted in ("round_robin", "least_request", "prefix_affinity", "predicted_load"):
        assert wanted in names
    assert "least_request+S32" in names and "least_request+S128" in names
    assert {a.router for a in default_arms()} == {"direct", "flotilla", "vllm-router", "sglang-router"}
    assert len(set(names)) == len(names)


def test_flotilla_config_is_a_valid_router_config() -> None:
    arm = Arm(
        name="x", router="flotilla", policy="prefix_affinity", params={"load_factor": 1.5}, slice_tokens=64
    )
    raw = flotilla_config(arm, port=8123, model="bench", engines=ENGINES, seed=3)
    cfg = RouterConfig.model_validate(raw)
    assert cfg.static is not None and [i.url for i in cfg.static.instances] == ENGINES
    routing = cfg.static.models["bench"]
    assert routing.policy == "prefix_affinity" and routing.slice_tokens == 64
    assert routing.params == {"load_factor": 1.5}
    plain = flotilla_config(
        Arm(name="y", router="flotilla", policy="round_robin"), port=1, model="m", engines=ENGINES, seed=0
    )
    assert "slice_tokens" not in plain["static"]["models"]["m"]


def test_backlog_arms_configure_the_router_they_name() -> None:
    configs = {
        a.name: RouterConfig.model_validate(flotilla_config(a, port=1, model="m", engines=ENGINES, seed=0))
        for a in backlog_arms()
    }
    before = configs["lw+prefix, no backlog"]
    assert before.kv_usage_limit is None and before.queue_order == "fcfs"
    assert before.max_inflight_per_instance == 256
    defaults = RouterConfig.model_fields
    held = configs["lw+prefix, 4 slots, defaults"]
    assert held.max_inflight_per_instance == 4
    assert held.queue_order == defaults["queue_order"].default == "shortest_work_first"
    assert held.kv_usage_limit == defaults["kv_usage_limit"].default
    fcfs = configs["lw+prefix, 8 slots, fcfs"]
    assert (fcfs.max_inflight_per_instance, fcfs.queue_order) == (8, "fcfs")
    assert configs["lw+prefix, defaults + target 2x"].batch_target is not None


def test_rust_router_command_lines(tmp_path: Path) -> None:
    vr = command(
        Arm(name="v", router="vllm-router", policy="cache_aware"),
        port=9,
        engines=ENGINES,
        config_path=tmp_path,
    )
    assert vr[0].endswith("vllm-router") and vr[vr.index("--policy") + 1] == "cache_aware"
    assert vr[vr.index("--worker-urls") + 1 : vr.index("--worker-urls") + 3] == ENGINES
    sg = command(
        Arm(name="s", router="sglang-router", policy="cache_aware", extra_args=("--cache-threshold", "0.5")),
        port=9,
        engines=ENGINES,
        config_path=tmp_path,
    )
    assert sg[0].endswith("sglang-router") and sg[1] == "launch" and sg[-2:] == ["--cache-threshold", "0.5"]
    fl = command(
        Arm(name="f", router="flotilla", policy="round_robin"),
        port=9,
        engines=ENGINES,
        config_path=tmp_path / "c.yaml",
    )
    assert fl[-3:] == [str(tmp_path / "c.yaml"), "--log-level", "warning"] and "router" in fl
