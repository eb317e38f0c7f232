"""examples/*.yaml are valid InferenceFleets (the API server check is in e2e/helm) and fit the
demo cluster: two models, different priority tiers, GPUs within the 4 x 8 demo nodes."""

from __future__ import annotations

from pathlib import Path

import yaml

from flotilla.api import InferenceFleetSpec, labels
from flotilla.localcluster.binaries import find_repo_root
from flotilla.localcluster.controlplane import ClusterConfig

EXAMPLES = find_repo_root(Path(__file__).resolve()) / "examples"


def test_examples_are_valid_and_fit_the_demo_cluster() -> None:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    assert len(docs) == 2
    specs = []
    for doc in docs:
        assert doc["apiVersion"] == labels.API_VERSION and doc["kind"] == labels.KIND
        specs.append(InferenceFleetSpec.model_validate(doc["spec"]))
    assert len({s.model.name for s in specs}) == 2
    assert len({s.priority.tier for s in specs}) == 2
    demo = ClusterConfig()
    assert sum(s.replicas * s.resources.gpus for s in specs) <= demo.gpu_nodes * demo.gpus_per_node
    assert all(s.resources.gpus <= demo.gpus_per_node for s in specs)
