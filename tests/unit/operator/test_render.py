"""Pod rendering: the vLLM container, scheduling fields, and what the revision hash covers."""

from __future__ import annotations

from typing import Any

from flotilla.api import InferenceFleetSpec, labels
from flotilla.operator.config import RenderConfig
from flotilla.operator.render import FleetRef, engine_args, render_pod, revision_of

FLEET = FleetRef("ns", "llama", "uid-1")


def _spec(**over: Any) -> InferenceFleetSpec:
    base: dict[str, Any] = {"model": {"name": "llama-8b", "source": "meta-llama/Llama-3.1-8B-Instruct"}}
    base.update(over)
    return InferenceFleetSpec.model_validate(base)


def _pod(spec: InferenceFleetSpec, config: RenderConfig | None = None, **kw: Any) -> dict[str, Any]:
    config = config or RenderConfig()
    args = {"index": 3, "revision": revision_of(spec, config), "tier": 7, "failures": 0, **kw}
    return render_pod(FLEET, spec, config=config, **args)


def test_pod_identity_owner_and_labels() -> None:
    pod = _pod(_spec())
    meta = pod["metadata"]
    assert meta["generateName"] == "llama-3-"
    assert meta["namespace"] == "ns"
    assert meta["labels"][labels.LABEL_FLEET] == "llama"
    assert meta["labels"][labels.LABEL_REPLICA] == "3"
    assert meta["labels"][labels.LABEL_TIER] == "7"
    assert meta["labels"][labels.LABEL_REVISION] == revision_of(_spec(), RenderConfig())
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "InferenceFleet",
        "name": "llama",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert meta["annotations"][labels.ANNOTATION_PLACEMENT] == "pack"


def test_engine_container_from_typed_fields() -> None:
    spec = _spec(
        engine={
            "tensorParallelSize": 2,
            "maxModelLen": 8192,
            "maxNumSeqs": 128,
            "maxNumBatchedTokens": 4096,
            "enablePrefixCaching": False,
            "extraArgs": ["--dtype", "bfloat16"],
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
        },
        resources={"gpus": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3", "cpu": "8", "memory": "64Gi"},
    )
    pod = _pod(spec)
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["--model", "meta-llama/Llama-3.1-8B-Instruct"]
    assert args[args.index("--served-model-name") + 1] == "llama-8b"
    assert args[args.index("--port") + 1] == "8000"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--max-num-batched-tokens") + 1] == "4096"
    assert "--no-enable-prefix-caching" in args
    assert args[-2:] == ["--dtype", "bfloat16"], "extra args come last"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in container[
        "env"
    ]
    podspec = pod["spec"]
    assert podspec["schedulerName"] == "flotilla"
    assert podspec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert podspec["securityContext"]["runAsNonRoot"] is True
    assert podspec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    shm = next(v for v in podspec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_kwok_toleration_only_when_configured() -> None:
    def kwok(pod: dict[str, Any]) -> bool:
        return any(t.get("key") == labels.KWOK_TAINT_KEY for t in pod["spec"]["tolerations"])

    assert not kwok(_pod(_spec()))
    assert kwok(_pod(_spec(), RenderConfig(tolerate_kwok=True)))


def test_pvc_source_is_mounted_read_only() -> None:
    pod = _pod(_spec(model={"name": "m", "source": "pvc://weights/llama/8b"}))
    (container,) = pod["spec"]["containers"]
    assert container["args"][1] == "/models-src/llama/8b"
    vol = next(v for v in pod["spec"]["volumes"] if v["name"] == "model-source")
    assert vol["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}


def test_priority_class_and_cpu_only_fleet() -> None:
    pod = _pod(_spec(priority={"className": "high"}, resources={"gpus": 0}))
    assert pod["spec"]["priorityClassName"] == "high"
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"].get("limits", {})


def test_revision_changes_with_pod_spec_not_with_mutable_metadata() -> None:
    cfg = RenderConfig()
    base = revision_of(_spec(), cfg)
    assert revision_of(_spec(), cfg) == base, "stable across calls"
    assert revision_of(_spec(engine={"extraArgs": ["--seed=1"]}), cfg) != base
    assert revision_of(_spec(resources={"gpus": 2}), cfg) != base
    # Tier, placement hints and replica counts are patched or scaled, never rolled.
    assert revision_of(_spec(priority={"tier": 5}), cfg) == base
    assert revision_of(_spec(placement={"strategy": "spread"}), cfg) == base
    assert revision_of(_spec(replicas=9), cfg) == base
    assert revision_of(_spec(), RenderConfig(tolerate_kwok=True)) != base


def test_engine_args_minimal() -> None:
    assert engine_args(_spec(), "x") == [
        "--model",
        "x",
        "--served-model-name",
        "llama-8b",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--tensor-parallel-size",
        "1",
    ]
