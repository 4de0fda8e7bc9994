"""CNN encoders that turn an image into a grid of features F (chapter 2, book/method.md §1).

- `SmallVGG`: the book's VGG-style encoder for 112×112 ShapeWorld images. Blocks of
  (3×3 conv → ReLU), a 2×2 max-pool after each of the first three blocks and a final block
  without pool (like VGG16 without its last pool): 112 → 56 → 28 → 14, a 14×14 grid
  (N = 196, as in the paper).
- `MultiLabelHead`: global max pool + linear, for multi-label object pretraining (the
  book's stand-in for ImageNet pretraining). Max rather than average pooling because
  ShapeWorld objects cover only a few of the 196 cells: averaging dilutes them (measured in
  chapter 2's development: validation mAP 0.79 vs 0.48 after three epochs on 1,500 images).
- `vgg16_features`: torchvision's VGG16 up to conv5_3 + ReLU (last pool removed), the
  paper's encoder: 14×14×512 on 224×224 images.

`.features` of both encoders is an `nn.Sequential` of plain conv/ReLU/pool layers so that
zennit composites (chapter 7) and captum (chapter 8) can be applied to it directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

POOLS = 3


class SmallVGG(nn.Module):
    """VGG-style encoder: images (B, 3, in_size, in_size) → F (B, C, in_size/8, in_size/8).

    channels: widths of the three pooled blocks; the final unpooled block repeats the last
    one, so the defaults give [32, 32, M, 64, 64, M, 128, 128, M, 128, 128] and C = 128.
    convs_per_block: 3×3 convolutions (each followed by ReLU) per block.
    in_size: the expected square input size, a multiple of 8.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        convs_per_block: int = 2,
        in_size: int = 112,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) != POOLS or any(c < 1 for c in channels):
            raise ValueError(f"channels must be {POOLS} positive ints, got {channels}")
        if convs_per_block < 1:
            raise ValueError(f"convs_per_block must be >= 1, got {convs_per_block}")
        if in_size < 8 or in_size % 2**POOLS:
            raise ValueError(f"in_size must be a positive multiple of {2**POOLS}, got {in_size}")
        self.channels = channels
        self.convs_per_block = convs_per_block
        self.in_size = in_size
        self.out_channels = channels[-1]
        self.grid_size = in_size // 2**POOLS

        layers: list[nn.Module] = []
        width = 3
        for block, out in enumerate((*channels, channels[-1])):
            if block > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_block):
                conv = nn.Conv2d(width, out, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers += [conv, nn.ReLU()]
                width = out
        self.features = nn.Sequential(*layers)

    def config(self) -> dict[str, object]:
        """Constructor arguments (JSON-able), for checkpoints."""
        return {
            "channels": list(self.channels),
            "convs_per_block": self.convs_per_block,
            "in_size": self.in_size,
        }

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) with S = in_size → F (B, C, S/8, S/8)."""
        expected = (3, self.in_size, self.in_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        return self.features(images)


class MultiLabelHead(nn.Module):
    """Multi-label classifier on a feature map: global max pool + linear (chapter 2).

    F (B, C, H, W) → logits (B, num_classes), trained with binary cross-entropy.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        if channels < 1 or num_classes < 1:
            raise ValueError(
                f"channels and num_classes must be >= 1, got {channels}, {num_classes}"
            )
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, feature_map: Tensor) -> Tensor:
        if feature_map.dim() != 4:
            raise ValueError(f"feature_map must be (B, C, H, W), got {tuple(feature_map.shape)}")
        return self.classifier(feature_map.amax(dim=(2, 3)))  # (B, num_classes)


def to_grid(feature_map: Tensor) -> Tensor:
    """F (B, C, H, W) → (B, N, C) with N = H·W locations in row-major order."""
    if feature_map.dim() != 4:
        raise ValueError(f"feature_map must be (B, C, H, W), got {tuple(feature_map.shape)}")
    return feature_map.flatten(2).transpose(1, 2)


def from_grid(grid: Tensor, height: int, width: int) -> Tensor:
    """(B, N, C) → (B, C, height, width); the inverse of `to_grid`."""
    if grid.dim() != 3 or grid.shape[1] != height * width:
        raise ValueError(
            f"grid must be (B, {height * width}, C) for a {height}×{width} map, "
            f"got {tuple(grid.shape)}"
        )
    return grid.transpose(1, 2).reshape(grid.shape[0], grid.shape[2], height, width)


def vgg16_features(pretrained: bool = False) -> nn.Sequential:
    """torchvision VGG16 `features[:-1]`: conv1_1 … conv5_3 + ReLU, last max-pool removed.

    224×224 images (ImageNet-normalised when pretrained) → 14×14×512. `pretrained=True`
    downloads the ImageNet weights through torchvision (an explicit network call) and raises
    RuntimeError when that fails. ReLUs are made non-inplace for gradient hooks.
    """
    from torchvision.models import VGG16_Weights, vgg16

    weights = VGG16_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        model = vgg16(weights=weights)
    except (OSError, RuntimeError) as error:
        raise RuntimeError(
            "Could not download the pretrained VGG16 weights from the network "
            f"({VGG16_Weights.IMAGENET1K_V1.url}); check the internet connection or use "
            "vgg16_features(pretrained=False)."
        ) from error
    features = nn.Sequential(*list(model.features.children())[:-1])
    for layer in features:
        if isinstance(layer, nn.ReLU):
            layer.inplace = False
    return features
