"""The attention baseline: α maps as explanations (chapter 5, book/method.md §6).

For every word the model's own attention weights over the N = h·w grid locations,
reshaped to the grid and upsampled to the image size. Nearest-neighbour upsampling by
default: each grid cell stays a visible block and nothing is smoothed (the authors' Gaussian
blur makes attention look sharper than it is). Captioner A also reports β, the share given
to the visual sentinel; its α is the joint weight α̂[:N], so α sums to 1 − β over the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from captionlib.data.vocab import Vocabulary
from captionlib.explain.lrp import Explanation, check_captions, explaining
from captionlib.models.base import Captioner
from captionlib.models.encoder import to_grid

UPSAMPLING = ("nearest", "bilinear")


def upsample_grid(
    scores: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int], mode: str = "nearest"
) -> Tensor:
    """Per-location scores (..., N) on an h×w grid (row-major) → maps (..., H, W)."""
    if mode not in UPSAMPLING:
        raise ValueError(f"mode must be one of {UPSAMPLING}, got {mode!r}")
    height, width = grid_size
    if scores.shape[-1] != height * width:
        raise ValueError(f"scores have {scores.shape[-1]} locations, grid is {height}×{width}")
    lead = scores.shape[:-1]
    maps = scores.reshape(-1, 1, height, width)
    options = {"align_corners": False} if mode == "bilinear" else {}
    maps = functional.interpolate(maps, size=tuple(image_size), mode=mode, **options)
    return maps.reshape(*lead, *image_size)


def explain_attention(
    model: Captioner,
    caption_ids: Tensor,
    *,
    images: Tensor | None = None,
    encoder: nn.Module | None = None,
    features: Tensor | None = None,
    head: int | None = None,
    mode: str = "nearest",
    image_size: tuple[int, int] | None = None,
    pad_id: int | None = Vocabulary.PAD_ID,
) -> Explanation:
    """Attention maps for every word of B teacher-forced captions (chapter 5).

    Give images (B, 3, H, W) with the encoder, or features (B, N, C) (square grid) with an
    optional image_size for the heatmap. head: one head of captioner B (default: the mean
    over heads). Returns an Explanation with locations = α (B, T−1, N), heatmap (B, T−1,
    H, W) (None without an image size), extras "beta" (captioner A) or "alpha_heads"
    (B, T−1, M, N) (captioner B).
    """
    check_captions(model, caption_ids)
    if (images is None) == (features is None):
        raise ValueError("give exactly one of images (with encoder) or features")
    parameter = next(model.parameters())
    caption_ids = caption_ids.to(parameter.device)
    with explaining(model, encoder), torch.no_grad():
        if features is not None:
            side = int(round(features.shape[1] ** 0.5)) if features.dim() == 3 else 0
            if side * side != features.shape[1]:
                raise ValueError(
                    f"features must be (B, N, C) on a square grid, got {tuple(features.shape)}"
                )
            grid_size = (side, side)
            grid = features.to(device=parameter.device, dtype=parameter.dtype)
        elif encoder is None:
            raise ValueError("images need the encoder that produced the model's features")
        else:
            cnn = getattr(encoder, "features", encoder)
            pixels = images.to(device=parameter.device, dtype=parameter.dtype)  # type: ignore[union-attr]
            feature_map = cnn(pixels)  # (B, C, h, w)
            grid_size = (feature_map.shape[2], feature_map.shape[3])
            image_size = (pixels.shape[2], pixels.shape[3])
            grid = to_grid(feature_map)
        out = model(grid, caption_ids)
    words = caption_ids[:, 1:]
    logits = out.logits.gather(2, words.unsqueeze(2)).squeeze(2)  # (B, K)
    extras: dict[str, Tensor] = {}
    alpha = out.alpha  # (B, K, N) or (B, K, M, N)
    if alpha.dim() == 4:
        extras["alpha_heads"] = alpha
        if head is None:
            alpha = alpha.mean(2)
        elif 0 <= head < alpha.shape[2]:
            alpha = alpha[:, :, head]
        else:
            raise ValueError(f"head must be in [0, {alpha.shape[2]}), got {head}")
    elif head is not None:
        raise ValueError(f"head={head} needs a multi-head captioner, got {type(model).__name__}")
    if out.beta is not None:
        extras["beta"] = out.beta
    heatmap = None if image_size is None else upsample_grid(alpha, grid_size, image_size, mode)
    mask = torch.ones_like(words, dtype=torch.bool) if pad_id is None else words != pad_id
    return Explanation(
        method="attention",
        caption_ids=caption_ids,
        words=words,
        logits=logits,
        mask=mask,
        locations=alpha,
        grid_size=grid_size,
        heatmap=heatmap,
        extras=extras,
    )
