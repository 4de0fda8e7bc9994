"""The distorted copy's features that chapter 11's visual contrastive decoding contrasts with
(`captionlib.studies.contrast_features`)."""

from __future__ import annotations

import torch

from captionlib.models.encoder import SmallVGG
from captionlib.studies import ContrastSettings, contrast_features, grid_features


def _encoder_and_images() -> tuple[SmallVGG, torch.Tensor]:
    torch.manual_seed(0)
    encoder = SmallVGG(channels=(4, 6, 8), convs_per_block=1, in_size=32)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    return encoder, images


def test_step_zero_gives_the_images_own_features() -> None:
    encoder, images = _encoder_and_images()
    plain = grid_features(encoder, images)  # (5, N, C)
    distorted = contrast_features(encoder, images, ContrastSettings(noise_step=0))
    assert distorted.shape == plain.shape == (5, 4 * 4, 8)
    torch.testing.assert_close(distorted, plain, rtol=1e-5, atol=1e-5)


def test_the_noise_is_fixed_by_its_seed_and_changes_the_features() -> None:
    encoder, images = _encoder_and_images()
    first = contrast_features(encoder, images, ContrastSettings(noise_step=500, noise_seed=3))
    again = contrast_features(encoder, images, ContrastSettings(noise_step=500, noise_seed=3))
    other = contrast_features(encoder, images, ContrastSettings(noise_step=500, noise_seed=4))
    plain = grid_features(encoder, images)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # at step 500 of the linear schedule sqrt(alpha_bar) is about 0.28: far from the image
    assert (first - plain).abs().mean() > 0.1 * plain.abs().mean()
