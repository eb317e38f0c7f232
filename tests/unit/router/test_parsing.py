import pytest

from flotilla.router.config import ModelRouting, RouterConfig
from flotilla.router.discovery.kube import FleetRouting, fleet_routing, instance_specs, model_routing
from flotilla.router.errors import ApiError
from flotilla.router.features import extract
from flotilla.router.instances import EngineSample, InstanceRecord, InstanceSpec
from flotilla.router.proxy import parse_body
from flotilla.router.scrape import parse_engine_metrics

VLLM_METRICS = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 640.0
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="1000"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 2.0
"""


def test_parse_engine_metrics_sums_engines_and_reads_cache_config() -> None:
    s = parse_engine_metrics(VLLM_METRICS)
    assert s == EngineSample(
        running=5,
        waiting=4,
        kv_usage=0.25,
        kv_capacity_tokens=16000,
        prefix_queries=1000.0,
        prefix_hits=640.0,
    )


def test_view_corrects_stale_scrape_with_own_accounting() -> None:
    rec = InstanceRecord(spec=InstanceSpec(id="a", url="http://a", model="m"), max_inflight=8)
    rec.inflight, rec.inflight_tokens = 2, 200
    rec.record_sample(EngineSample(running=6, waiting=0, kv_usage=0.5, kv_capacity_tokens=1000))
    rec.inflight, rec.inflight_tokens = 5, 500  # three more sent since the scrape
    v = rec.view()
    assert v.est_requests == 9 and v.est_kv_usage == pytest.approx(0.8)
    rec.inflight = 0  # all ours finished: the scrape's others remain
    assert rec.view().est_requests == 4


def test_view_counts_requests_waiting_in_the_engine_at_the_scrape() -> None:
    # A burst queued inside the engine holds no KV in its scrape yet: its prompts must stay in the
    # estimate, or the KV budget forgets them at every scrape and lets more in.
    rec = InstanceRecord(spec=InstanceSpec(id="a", url="http://a", model="m"), max_inflight=8)
    rec.inflight, rec.inflight_tokens, rec.pending_prefill = 3, 3000, 1200  # two still in the queue
    rec.record_sample(EngineSample(running=1, waiting=2, kv_usage=0.3, kv_capacity_tokens=10000))
    assert rec.view().est_kv_usage == pytest.approx(0.42)
    rec.pending_prefill = 0  # their first tokens came: the scrape is stale, the estimate stands
    assert rec.view().est_kv_usage == pytest.approx(0.42)
    rec.record_sample(EngineSample(running=3, waiting=0, kv_usage=0.45, kv_capacity_tokens=10000))
    assert rec.view().est_kv_usage == pytest.approx(0.45)  # now the engine counts them itself


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{", 400),
        (b"[1]", 400),
        (b'{"prompt":"x"}', 400),
        (b'{"model":3}', 400),
        (b'{"model":"m","stream":"yes"}', 400),
    ],
)
def test_malformed_bodies_are_400(raw: bytes, status: int) -> None:
    with pytest.raises(ApiError) as e:
        parse_body(raw)
    assert e.value.status == status
    assert b'"code":400' in e.value.body()


def test_a_body_the_auth_gate_decoded_is_validated_not_decoded_again() -> None:
    decoded = {"model": "m", "prompt": "x"}
    body, model = parse_body(b"not read", decoded)
    assert body is decoded and model == "m"
    with pytest.raises(ApiError) as e:
        parse_body(b"not read", {"model": "m", "stream": "yes"})
    assert e.value.status == 400


def test_features_are_stable_and_shared_prefixes_share_hashes() -> None:
    a = extract("completion", {"prompt": "x" * 200 + "tail one"}, "m")
    b = extract("completion", {"prompt": "x" * 200 + "tail two"}, "m")
    assert a.prefix_hashes[:3] == b.prefix_hashes[:3] and len(a.prefix_hashes) == 3
    assert a.prefix_hashes == extract("completion", {"prompt": "x" * 200 + "tail one"}, "m").prefix_hashes
    ids = extract("completion", {"prompt": list(range(40)), "max_tokens": 7}, "m")
    assert ids.prompt_tokens == 40 and ids.max_tokens == 7 and len(ids.prefix_hashes) == 2
    chat = extract("chat", {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9}, "m")
    assert chat.max_tokens == 9 and chat.prompt_tokens >= 1


def test_config_requires_exactly_one_discovery_and_forbids_unknown_keys() -> None:
    with pytest.raises(ValueError):
        RouterConfig.model_validate({})
    with pytest.raises(ValueError):
        RouterConfig.model_validate({"static": {"instances": [{"url": "http://a", "model": "m"}]}, "prot": 1})
    cfg = RouterConfig.model_validate({"kubernetes": {"namespace": "x"}})
    assert cfg.kubernetes is not None and cfg.default_policy == "least_request"


def _pod(
    name: str, *, ready: bool, ip: str | None = "127.0.1.5", fleet: str = "f", deleting: bool = False
) -> dict:
    meta: dict = {
        "name": name,
        "namespace": "ns",
        "labels": {"flotilla.dev/fleet": fleet, "flotilla.dev/model": "pm"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 9000}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_kube_instances_are_ready_pods_with_the_fleets_model() -> None:
    fleets = {("ns", "f"): FleetRouting("llama", ModelRouting(policy="prefix_affinity"))}
    pods = {
        ("ns", "a"): _pod("a", ready=True),
        ("ns", "b"): _pod("b", ready=False),
        ("ns", "c"): _pod("c", ready=True, ip=None),
        ("ns", "d"): _pod("d", ready=True, deleting=True),
        ("ns", "e"): _pod("e", ready=True, fleet="unknown"),
    }
    specs = instance_specs(fleets, pods, None)
    assert [s.id for s in specs] == ["ns/a", "ns/e"]
    a, e = specs
    assert (a.url, a.model) == ("http://127.0.1.5:9000", "llama")
    assert e.model == "pm"  # fleet not seen yet: the pod's own label (and the router's defaults)
    assert model_routing(fleets) == {"llama": ModelRouting(policy="prefix_affinity")}


def test_routing_is_resolved_once_per_model_from_its_fleet() -> None:
    obj = {
        "metadata": {"name": "f"},
        "spec": {
            "model": {"name": "llama", "source": "meta-llama/Llama-3.1-8B-Instruct"},
            "resources": {"gpus": 1},
            "router": {
                "policy": "prefix_affinity",
                "params": {"load_factor": 1.5},
                "sliceTokens": 64,
                "predictor": {"name": "llama-3.1-8b"},
            },
        },
    }
    fleet = fleet_routing(obj)
    assert fleet is not None and fleet.model == "llama"
    assert fleet.routing == ModelRouting(
        policy="prefix_affinity", params={"load_factor": 1.5}, predictor="llama-3.1-8b", slice_tokens=64
    )
    # Two fleets of one model: the first by namespace/name decides, whatever the watch order.
    other = FleetRouting("llama", ModelRouting(policy="round_robin"))
    assert model_routing({("ns", "g"): other, ("ns", "f"): fleet})["llama"] == fleet.routing
