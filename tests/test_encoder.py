"""Encoders (book/method.md §1): grid sizes, layer structure, grid helpers, the VGG16 option."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from captionlib.models import MultiLabelHead, SmallVGG, from_grid, to_grid, vgg16_features

torch.set_num_threads(1)


def test_small_vgg_gives_a_14_by_14_grid_on_112_images() -> None:
    torch.manual_seed(0)
    encoder = SmallVGG()
    feature_map = encoder(torch.rand(2, 3, 112, 112))
    assert feature_map.shape == (2, 128, 14, 14)
    assert encoder.out_channels == 128 and encoder.grid_size == 14
    assert (feature_map >= 0).all()  # ends in a ReLU


def test_small_vgg_layers_are_plain_and_pool_three_times() -> None:
    encoder = SmallVGG(channels=(4, 8, 16), convs_per_block=2)
    kinds = [type(layer) for layer in encoder.features]
    assert set(kinds) == {nn.Conv2d, nn.ReLU, nn.MaxPool2d}
    assert kinds.count(nn.MaxPool2d) == 3
    assert kinds[-1] is nn.ReLU  # no pool after the last block
    widths = [layer.out_channels for layer in encoder.features if isinstance(layer, nn.Conv2d)]
    assert widths == [4, 4, 8, 8, 16, 16, 16, 16]


def test_small_vgg_custom_sizes_and_bad_inputs() -> None:
    encoder = SmallVGG(channels=(3, 5, 7), convs_per_block=1, in_size=64)
    assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, 7, 8, 8)
    with pytest.raises(ValueError, match="images"):
        encoder(torch.rand(1, 3, 112, 112))
    with pytest.raises(ValueError, match="images"):
        encoder(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="in_size"):
        SmallVGG(in_size=100)
    with pytest.raises(ValueError, match="channels"):
        SmallVGG(channels=(8, 16))


def test_small_vgg_config_round_trip() -> None:
    encoder = SmallVGG(channels=(3, 5, 7), convs_per_block=1, in_size=64)
    rebuilt = SmallVGG(**encoder.config())
    rebuilt.load_state_dict(encoder.state_dict())
    images = torch.rand(1, 3, 64, 64)
    assert torch.equal(rebuilt(images), encoder(images))


def test_to_grid_is_row_major_and_from_grid_inverts_it() -> None:
    feature_map = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    grid = to_grid(feature_map)
    assert grid.shape == (2, 20, 3)
    assert torch.equal(grid[1, 2 * 5 + 3], feature_map[1, :, 2, 3])
    assert torch.equal(from_grid(grid, 4, 5), feature_map)
    with pytest.raises(ValueError, match="grid"):
        from_grid(grid, 5, 5)
    with pytest.raises(ValueError, match="feature_map"):
        to_grid(grid)


def test_multilabel_head_is_linear_on_the_spatial_max() -> None:
    torch.manual_seed(0)
    head = MultiLabelHead(6, 4)
    feature_map = torch.rand(3, 6, 5, 5)
    expected = feature_map.amax(dim=(2, 3)) @ head.classifier.weight.T + head.classifier.bias
    torch.testing.assert_close(head(feature_map), expected)
    with pytest.raises(ValueError, match="num_classes"):
        MultiLabelHead(6, 0)


def test_vgg16_features_without_weights() -> None:
    features = vgg16_features(pretrained=False)
    kinds = [type(layer) for layer in features]
    assert kinds.count(nn.Conv2d) == 13 and kinds.count(nn.MaxPool2d) == 4
    assert kinds[-1] is nn.ReLU
    assert not any(getattr(layer, "inplace", False) for layer in features)
    with torch.no_grad():
        assert features(torch.rand(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_vgg16_pretrained_download_failure_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="network") as failure:
        vgg16_features(pretrained=True)
    assert isinstance(failure.value.__cause__, urllib.error.URLError)
