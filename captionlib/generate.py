"""Captioning a whole split from cached features (chapter 3).

`caption_features` runs greedy decoding (beam 1) or beam search over a split's encoder
features in batches and returns readable captions with the trailing "bad endings" removed,
ready for `captionlib.evaluate.captions.score_captions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from captionlib.data.vocab import Vocabulary
from captionlib.features import MemmapFeatures
from captionlib.models.base import Captioner
from captionlib.models.decoding import (
    Caution,
    DecodedCaption,
    VisualContrast,
    beam_search,
    greedy,
    remove_bad_endings,
)


def decode_features(
    model: Captioner,
    features: Tensor | MemmapFeatures,
    vocab: Vocabulary,
    beam_size: int = 3,
    max_length: int = 16,
    batch_size: int = 100,
    *,
    caution: Caution | None = None,
    contrast: VisualContrast | None = None,
) -> list[DecodedCaption]:
    """Decode every row of features (num_images, N, C), a tensor or a feature store read
    `batch_size` rows at a time, on the model's device; beam 1 is greedy decoding.

    `caution` and `contrast` are the decoding-time options of `captionlib.models.decoding`
    (chapter 11); `contrast.features` holds the distorted images' features row for row
    (a tensor or a feature store, read in the same batches). Decoding runs with one PyTorch
    thread (see `captionlib.models.decoding`).
    """
    if contrast is not None and len(contrast.features) != len(features):
        raise ValueError(
            f"VisualContrast.features has {len(contrast.features)} rows for "
            f"{len(features)} rows of features"
        )
    decoded: list[DecodedCaption] = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size].to(device)  # (batch, N, C)
            options = {
                "caution": caution,
                "contrast": None
                if contrast is None
                else replace(
                    contrast, features=contrast.features[start : start + batch_size].to(device)
                ),
            }
            if beam_size == 1:
                decoded += greedy(
                    model, chunk, Vocabulary.START_ID, Vocabulary.END_ID, max_length, **options
                )
            else:
                decoded += beam_search(
                    model,
                    chunk,
                    Vocabulary.START_ID,
                    Vocabulary.END_ID,
                    beam_size,
                    max_length,
                    **options,
                )
    return decoded


def caption_text(caption: DecodedCaption, vocab: Vocabulary) -> str:
    """The caption's words with trailing bad endings removed, joined by spaces."""
    words = [vocab.id_to_word(token) for token in caption.token_ids]
    return " ".join(remove_bad_endings(words))


def caption_features(
    model: Captioner,
    features: Tensor | MemmapFeatures,
    image_ids: Sequence[int],
    vocab: Vocabulary,
    beam_size: int = 3,
    max_length: int = 16,
    *,
    caution: Caution | None = None,
    contrast: VisualContrast | None = None,
) -> dict[int, str]:
    """image id → caption text for every row of features (num_images, N, C), decoded with
    `decode_features` (and its options)."""
    if len(image_ids) != features.shape[0]:
        raise ValueError(f"got {len(image_ids)} image ids for {features.shape[0]} rows of features")
    decoded = decode_features(
        model, features, vocab, beam_size, max_length, caution=caution, contrast=contrast
    )
    return {
        int(image_id): caption_text(caption, vocab)
        for image_id, caption in zip(image_ids, decoded, strict=True)
    }
