"""audiossl/models/registry.py: every preset builds (on the meta device) and round-trips."""

from __future__ import annotations

import pytest
import torch

from audiossl.models import registry


def test_presets_cover_every_family_and_the_issue_names():
    names = set(registry.preset_names())
    for required in ("eat_base", "eat_large", "maeast_patch_base", "maeast_frame_base", "mae_vit_base",
                     "mae_vit_large", "mae_vit_huge", "ssast_tiny_patch", "ssast_base_frame", "eat_tiny", "ijepa_vit_base", "ijepa_vit_huge"):
        assert required in names
    assert {registry.family_of(n) for n in names} == set(registry.FAMILIES)


@pytest.mark.parametrize("name", registry.preset_names())
def test_every_preset_builds_and_rebuilds_from_its_config(name):
    with torch.device("meta"):
        model = registry.build_model(name)
        again = registry.model_from_config(registry.family_of(name), model.config.to_dict())
    assert type(again) is type(model)
    assert again.config.to_dict() == model.config.to_dict()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}


def test_overrides_and_errors():
    cfg = registry.build_config("maeast_patch_tiny", mask_ratio=0.5, encoder={"depth": 3})
    assert cfg.mask_ratio == 0.5 and cfg.encoder.depth == 3
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        registry.build_model("nope")
    with pytest.raises(ValueError, match="unknown model family"):
        registry.model_from_config("nope", {})
