"""The variant grid (pure config; training itself needs torch and runs on the GPU machine)."""

import pytest

from flotilla.predictor_training.finetune import FinetuneConfig
from flotilla.predictor_training.sweep import DEFAULT_VARIANTS, MAX_COST, servable


def test_variant_names_are_unique_and_say_what_differs() -> None:
    names = [v.name for v in DEFAULT_VARIANTS]
    assert len(names) == len(set(names))
    assert FinetuneConfig(layers=2, keep=48, ffn_keep=768, joint=True).name == "listmle-L2-T48-F768-joint"
    assert FinetuneConfig(train_encoder=False).name.endswith("-frozen")


def test_cost_model_and_servability() -> None:
    full = FinetuneConfig(layers=1, keep=48)
    assert full.cost == pytest.approx(50.0)
    assert FinetuneConfig(layers=1, keep=48, ffn_keep=768).cost == pytest.approx(50.0 * 3072 / 4608)
    assert not servable(FinetuneConfig(layers=6, keep=128))
    assert not servable(FinetuneConfig(layers=1, keep=16, head="classifier"))  # no linear head to refit
    assert not servable(FinetuneConfig(layers=1, keep=16, train_encoder=False))
    assert servable(FinetuneConfig(layers=1, keep=64))
    # the grid compares heads at one servable shape and brackets it with unservable references
    heads = {v.head for v in DEFAULT_VARIANTS if v.layers == 2 and v.keep == 48 and v.ffn_keep == 768}
    assert {"listmle", "pairwise", "regression", "classifier"} <= heads
    assert any(v.cost > MAX_COST for v in DEFAULT_VARIANTS)
