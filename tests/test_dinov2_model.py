"""vit_small_patch14_dinov2: timm's DINOv2 ViT-S/14 backbone in models/ (LayerScale, patch
14, no head), so that a timm DINOv2 state_dict (trained at 518x518) loads strict."""

import torch

from nmc.models.deit import timm_state_dict_shapes
from nmc.models.registry import build_model

NAME = "vit_small_patch14_dinov2"


def test_parameter_names_and_shapes_are_timms():
    model, example = build_model(NAME, {})
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = timm_state_dict_shapes(img_size=224, patch=14, dim=384, depth=12, num_classes=0,
                                  layer_scale=True)
    assert got == want
    assert tuple(example.shape) == (1, 3, 224, 224)
    assert got["pos_embed"] == (1, 257, 384)  # 16 x 16 patches + the class token


def test_output_is_the_class_feature_or_logits():
    small = {"depth": 2, "img_size": 56}
    model, x = build_model(NAME, small)
    with torch.no_grad():
        assert tuple(model(x).shape) == (1, 384)
    model, x = build_model(NAME, {**small, "num_classes": 10})
    with torch.no_grad():
        assert tuple(model(x).shape) == (1, 10)


def test_layer_scale_multiplies_each_branch():
    model, x = build_model(NAME, {"depth": 1, "img_size": 28})
    with torch.no_grad():
        before = model(x)
        model.blocks[0].ls2.gamma.zero_()  # the MLP branch no longer counts
        without_mlp = model(x)
        model.blocks[0].ls1.gamma.zero_()  # nor does attention: the block is the identity
        identity = model(x)
        tokens = model.patch_embed(x)
        tokens = torch.cat((model.cls_token.expand(1, -1, -1), tokens), dim=1) + model.pos_embed
        want = model.norm(tokens)[:, 0]
    assert not torch.allclose(before, without_mlp)
    torch.testing.assert_close(identity, want)


def test_a_518_checkpoint_loads_strict_with_its_position_embedding_resampled(tmp_path):
    """timm's DINOv2 checkpoints hold 37 x 37 + 1 positions; like timm, nmc resamples the
    grid to the model's 16 x 16 (bicubic) and keeps the class token's."""
    source, _ = build_model(NAME, {"depth": 1})
    state = source.state_dict()
    grid = torch.full((1, 37 * 37, 384), 0.25)
    state["pos_embed"] = torch.cat((torch.arange(384.0).view(1, 1, 384), grid), dim=1)
    torch.save(state, tmp_path / "dinov2.pth")
    model, _ = build_model(NAME, {"depth": 1}, seed=1, weights=tmp_path / "dinov2.pth")
    pos = model.pos_embed.detach()
    assert tuple(pos.shape) == (1, 257, 384)
    torch.testing.assert_close(pos[0, 0], torch.arange(384.0))
    torch.testing.assert_close(pos[0, 1:], torch.full((256, 384), 0.25))  # constants stay
    for key, value in state.items():
        if key != "pos_embed":
            torch.testing.assert_close(model.state_dict()[key], value)

