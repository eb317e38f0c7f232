"""The InferenceFleet spec: what a user asks for.

Validation that spans fields is written as CEL (`x-kubernetes-validations`) so that the API server
refuses a bad resource at `kubectl apply` time with the field named; the same rules are mirrored in
pydantic validators where cheap, so Python callers fail the same way before reaching the server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from flotilla.api.base import ApiModel
from flotilla.api.routing import PolicyName

DEFAULT_ENGINE_IMAGE = "vllm/vllm-openai:v0.11.0"

# Kubernetes resource.Quantity as the core API's OpenAPI spells it, less the minus sign (see Quantity).
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _int64(value: int) -> int:
    if not -(2**63) <= value < 2**63:
        raise ValueError("must fit in a 64-bit integer")
    return value


# JSON integers the API server can hold: it decodes larger ones as floats and refuses them. Not a
# schema bound: the server reads minimum/maximum as floats, and 2**63 - 1 overflows to -2**63.
Int64 = Annotated[int, AfterValidator(_int64)]
# Without the sign: every quantity here is a size or a request, which pods refuse below zero.
Quantity = (
    Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]
    | Annotated[int, Field(ge=0), AfterValidator(_int64)]
)
# A count or a percentage of spec.replicas, as in a Deployment's rolling update.
IntOrPercent = Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^[0-9]+%$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]
# What a pod accepts as a label value and a PriorityClass name: the CRD refuses anything else up
# front, rather than the API server refusing every pod the operator creates for the fleet.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Arg = Annotated[str, StringConstraints(max_length=4096)]

# Flags the operator derives from typed fields; passing them in extraArgs would contradict the spec.
RESERVED_ENGINE_FLAGS = (
    "--model",
    "--served-model-name",
    "--host",
    "--port",
    "--tokenizer",
    "--tensor-parallel-size",
    "--max-model-len",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--gpu-memory-utilization",
)


def _cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _section(model: type[ApiModel]) -> Any:
    # default {} in the CRD makes the server fill in the section's own defaults when it is omitted,
    # so CEL rules can read e.g. self.resources.gpus without has() guards.
    return Field(default_factory=model, json_schema_extra={"default": {}})


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


class ModelSpec(ApiModel):
    """The model a fleet serves."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Served model name: the `model` field clients send to the router (vLLM --served-model-name)."""
    source: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    """Where the weights come from: a Hugging Face hub id (org/name), a URI (s3://, gs://), an
    absolute path inside the container, or pvc://<claim>/<path> to mount a PersistentVolumeClaim."""
    revision: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    """Hub revision (branch, tag or commit) of the weights."""
    tokenizer: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """Tokenizer source, when it differs from the weights' source."""


class SecretKeySelector(ApiModel):
    """A key of a Secret or ConfigMap in the fleet's namespace."""

    name: Name
    """Name of the Secret or ConfigMap."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """The key to read."""
    optional: bool | None = None
    """Whether the pod may start when the key is missing."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                    "exactly one of secretKeyRef and configMapKeyRef must be set",
                )
            ]
        }
    )

    secret_key_ref: SecretKeySelector | None = None
    """A key of a Secret (for tokens such as HF_TOKEN)."""
    config_map_key_ref: SecretKeySelector | None = None
    """A key of a ConfigMap."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("exactly one of secretKeyRef and configMapKeyRef must be set")
        return self


class EnvVar(ApiModel):
    """An environment variable of the engine container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("!(has(self.value) && has(self.valueFrom))", "value and valueFrom are exclusive")
            ]
        }
    )

    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256)]
    """Variable name."""
    value: Annotated[str, StringConstraints(max_length=32768)] | None = None
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Value read from a Secret or ConfigMap."""

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("value and valueFrom are exclusive")
        return self


class ModelCacheSpec(ApiModel):
    """A volume for downloaded weights, mounted at mountPath (HF_HOME points there)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.claimName) && has(self.sizeLimit))",
                    "sizeLimit applies to the emptyDir cache only; omit it with claimName",
                    ".sizeLimit",
                )
            ]
        }
    )

    claim_name: Name | None = None
    """PersistentVolumeClaim to use; when omitted the cache is an emptyDir (lost with the pod)."""
    size_limit: Quantity | None = None
    """Size limit of the emptyDir cache."""
    mount_path: Annotated[str, StringConstraints(pattern=r"^/.*", max_length=1024)] = "/models-cache"
    """Where the cache is mounted in the engine container."""
    read_only: bool = False
    """Mount the claim read-only (weights pre-populated by another job)."""

    @model_validator(mode="after")
    def _size_limit_for_empty_dir(self) -> ModelCacheSpec:
        if self.claim_name is not None and self.size_limit is not None:
            raise ValueError("sizeLimit applies to the emptyDir cache only; omit it with claimName")
        return self


class EngineSpec(ApiModel):
    """The inference engine (vLLM) each replica runs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.maxNumSeqs) || !has(self.maxNumBatchedTokens)"
                    " || self.maxNumBatchedTokens >= self.maxNumSeqs",
                    "maxNumBatchedTokens must be at least maxNumSeqs (every sequence needs a token per step)",
                    ".maxNumBatchedTokens",
                ),
                _cel(
                    "!has(self.extraArgs) || self.extraArgs.all(a, !(a.split('=')[0] in "
                    + _cel_list(RESERVED_ENGINE_FLAGS)
                    + "))",
                    "extraArgs must not set flags the operator derives from typed fields ("
                    + ", ".join(RESERVED_ENGINE_FLAGS)
                    + "); use the typed field",
                    ".extraArgs",
                ),
            ]
        }
    )

    image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = DEFAULT_ENGINE_IMAGE
    """Container image of the engine."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy of the engine container."""
    command: Annotated[list[Arg], Field(max_length=16)] | None = None
    """Entrypoint override; by default the image's OpenAI-compatible server module is run."""
    extra_args: Annotated[list[Arg], Field(max_length=128)] = []
    """Further engine flags, appended after the ones derived from typed fields."""
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    """GPUs one engine shards the model across (--tensor-parallel-size)."""
    max_model_len: Annotated[int, Field(ge=1, le=16_777_216)] | None = None
    """Longest sequence (prompt + output) in tokens (--max-model-len)."""
    max_num_seqs: Annotated[int, Field(ge=1, le=65_536)] | None = None
    """Most sequences batched together in one step (--max-num-seqs)."""
    max_num_batched_tokens: Annotated[int, Field(ge=1, le=16_777_216)] | None = None
    """Token budget of one step (--max-num-batched-tokens)."""
    enable_prefix_caching: bool | None = None
    """Automatic prefix caching; omitted leaves the engine's default."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None
    """Fraction of GPU memory the engine may use (--gpu-memory-utilization)."""
    env: Annotated[list[EnvVar], Field(max_length=64)] = []
    """Environment variables of the engine container."""
    model_cache: ModelCacheSpec | None = None
    """A volume for downloaded weights."""
    startup_timeout_seconds: Annotated[int, Field(ge=10, le=86_400)] = 1800
    """How long an engine may take to load its model before it is restarted."""

    @model_validator(mode="after")
    def _batch_fits_seqs(self) -> EngineSpec:
        seqs, tokens = self.max_num_seqs, self.max_num_batched_tokens
        if seqs is not None and tokens is not None and tokens < seqs:
            raise ValueError("maxNumBatchedTokens must be at least maxNumSeqs")
        return self


class ResourcesSpec(ApiModel):
    """What one replica needs."""

    gpus: Annotated[int, Field(ge=0, le=64)] = 1
    """GPUs per replica (the nvidia.com/gpu limit); a multiple of engine.tensorParallelSize."""
    gpu_product: (
        Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)] | None
    ) = None
    """Required GPU model, matched against the node label nvidia.com/gpu.product."""
    cpu: Quantity | None = None
    """CPU request (and limit) of the engine container."""
    memory: Quantity | None = None
    """Memory request (and limit) of the engine container."""
    shm_size: Quantity = "2Gi"
    """Size of the in-memory /dev/shm volume (NCCL and the engine's workers use it)."""


class PrioritySpec(ApiModel):
    """How important the fleet is: an integer tier, or a PriorityClass whose value is the tier."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.tier) && has(self.className))",
                    "set either tier or className, not both",
                    ".className",
                )
            ]
        }
    )

    tier: Annotated[int, Field(ge=0, le=1_000_000_000)] | None = None
    """Priority tier, larger is more important; the placement solver may preempt lower tiers."""
    class_name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None = None
    """A PriorityClass: set on the pods, and its value is used as the tier."""

    @model_validator(mode="after")
    def _tier_or_class(self) -> PrioritySpec:
        if self.tier is not None and self.class_name is not None:
            raise ValueError("set either tier or className, not both")
        return self


class PlacementSpec(ApiModel):
    """How the placement scheduler lays the fleet's pods over nodes."""

    strategy: Literal["pack", "spread"] = "pack"
    """pack: fill as few nodes (topology domains) as possible; spread: use as many as possible."""
    topology_key: LabelKey = "kubernetes.io/hostname"
    """Node label whose values are the domains to pack into or spread over."""
    mode: Literal["hard", "soft"] = "soft"
    """hard: a constraint the scheduler must meet; soft: a preference it trades against others."""


class PredictorRef(ApiModel):
    """The output-length predictor the router uses for this fleet."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """Registered predictor name."""
    uri: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """Where the predictor's trained weights are (a path or URI the router can read)."""


class RouterSpec(ApiModel):
    """How the router balances this fleet's requests."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("!has(self.params) || has(self.policy)", "params need a policy", ".params")
            ]
        }
    )

    policy: PolicyName | None = None
    """Balancing policy (one of the router's plug-ins); omitted uses the router's default."""
    params: dict[str, Any] | None = None
    """Parameters of the policy, checked against the policy's own model by the operator (condition
    RoutingAccepted) and by the router."""

    @model_validator(mode="after")
    def _params_need_a_policy(self) -> RouterSpec:
        if self.params is not None and self.policy is None:
            raise ValueError("params need a policy")
        return self

    slice_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Slice length in output tokens for slice-level scheduling; omitted schedules whole requests."""
    predictor: PredictorRef | None = None
    """Output-length predictor."""


class RolloutSpec(ApiModel):
    """Bounds of a rolling update, as in a Deployment."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    # has(): the server checks the default {} against the rules before filling it in.
                    "!has(self.maxSurge) || !has(self.maxUnavailable)"
                    " || !((self.maxSurge == 0 || self.maxSurge == '0%')"
                    " && (self.maxUnavailable == 0 || self.maxUnavailable == '0%'))",
                    "maxSurge and maxUnavailable cannot both be zero",
                    ".maxUnavailable",
                )
            ]
        }
    )

    max_surge: IntOrPercent = 1
    """Pods above spec.replicas during a rollout (count, or percent rounded up)."""
    max_unavailable: IntOrPercent = 0
    """Ready pods below spec.replicas allowed during a rollout (count, or percent rounded down)."""


class Toleration(ApiModel):
    """A toleration added to the fleet's pods."""

    # The pod's own rules, so that the CRD refuses what every pod of the fleet would be refused for.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.operator == 'Exists' || (has(self.key) && self.key != '')",
                    "key is required with operator Equal",
                    ".key",
                ),
                _cel(
                    "self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "value must be empty with operator Exists",
                    ".value",
                ),
                _cel(
                    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "tolerationSeconds needs effect NoExecute",
                    ".effect",
                ),
            ]
        }
    )

    key: Annotated[str, StringConstraints(max_length=317)] | None = None
    """Taint key; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Taint value for Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; omitted matches all."""
    toleration_seconds: Int64 | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _as_pods_require(self) -> Toleration:
        if self.operator == "Equal" and not self.key:
            raise ValueError("key is required with operator Equal")
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty with operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


class InferenceFleetSpec(ApiModel):
    """A fleet of identical inference engines serving one model behind the router."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.minReplicas) || self.minReplicas <= self.replicas",
                    "minReplicas must not exceed replicas",
                    ".minReplicas",
                ),
                _cel(
                    "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
                    "replicas must not exceed maxReplicas",
                    ".replicas",
                ),
                _cel(
                    "!has(self.minReplicas) || !has(self.maxReplicas)"
                    " || self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                    ".maxReplicas",
                ),
                _cel(
                    "self.resources.gpus % self.engine.tensorParallelSize == 0"
                    " && (self.engine.tensorParallelSize == 1 || self.resources.gpus > 0)",
                    "resources.gpus must be a positive multiple of engine.tensorParallelSize",
                    ".resources.gpus",
                ),
                _cel(
                    "self.podLabels.all(k, !k.startsWith('flotilla.dev/'))"
                    " && self.podAnnotations.all(k, !k.startsWith('flotilla.dev/'))",
                    "podLabels and podAnnotations must not use the reserved prefix flotilla.dev/",
                    ".podLabels",
                ),
                _cel(
                    "self.resources.gpus > 0 || !has(self.resources.gpuProduct)",
                    "resources.gpuProduct needs resources.gpus > 0",
                    ".resources.gpuProduct",
                ),
            ]
        }
    )

    model: ModelSpec
    """The model to serve."""
    engine: EngineSpec = _section(EngineSpec)
    """The engine each replica runs."""
    replicas: Annotated[int, Field(ge=0, le=10_000)] = 1
    """Desired number of engine replicas (the scale subresource's field)."""
    min_replicas: Annotated[int, Field(ge=0, le=10_000)] | None = None
    """Lower bound for autoscalers."""
    max_replicas: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Upper bound for autoscalers and `kubectl scale`."""
    resources: ResourcesSpec = _section(ResourcesSpec)
    """Resources of one replica."""
    priority: PrioritySpec = _section(PrioritySpec)
    """Importance of the fleet relative to others."""
    placement: PlacementSpec = _section(PlacementSpec)
    """How pods are laid over nodes."""
    router: RouterSpec = _section(RouterSpec)
    """Request routing for this fleet."""
    rollout: RolloutSpec = _section(RolloutSpec)
    """Bounds of rolling updates."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Extra tolerations of the fleet's pods."""
    node_selector: dict[str, LabelValue] = {}
    """Extra node labels the fleet's pods require."""
    pod_labels: Annotated[dict[str, LabelValue], Field(max_length=64)] = {}
    """Extra labels of the fleet's pods (keys under flotilla.dev/ are reserved); updated in place."""
    pod_annotations: Annotated[
        dict[str, Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)
    ] = {}
    """Extra annotations of the fleet's pods (keys under flotilla.dev/ are reserved); updated in place."""

    @model_validator(mode="after")
    def _cross_field(self) -> InferenceFleetSpec:
        # Mirrors the CEL rules above, so Python callers fail like the API server would.
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError("minReplicas must not exceed replicas")
        if self.max_replicas is not None and self.replicas > self.max_replicas:
            raise ValueError("replicas must not exceed maxReplicas")
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if self.resources.gpu_product is not None and self.resources.gpus == 0:
            raise ValueError("resources.gpuProduct needs resources.gpus > 0")
        # On the spec, not RolloutSpec: the planner still copes with a bare RolloutSpec(0, 0).
        if self.rollout.max_surge in (0, "0%") and self.rollout.max_unavailable in (0, "0%"):
            raise ValueError("rollout: maxSurge and maxUnavailable cannot both be zero")
        tp = self.engine.tensor_parallel_size
        if self.resources.gpus % tp or (tp > 1 and self.resources.gpus == 0):
            raise ValueError("resources.gpus must be a positive multiple of engine.tensorParallelSize")
        for key in [*self.pod_labels, *self.pod_annotations]:
            if key.startswith("flotilla.dev/"):
                raise ValueError(f"podLabels/podAnnotations: {key} uses the reserved prefix flotilla.dev/")
        for arg in self.engine.extra_args:
            if arg.split("=")[0] in RESERVED_ENGINE_FLAGS:
                raise ValueError(f"extraArgs must not set {arg.split('=')[0]}; use the typed field")
        return self
