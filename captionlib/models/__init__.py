"""Encoders, the two attention captioners and decoding (chapters 2–4).

- `encoder`: `SmallVGG`, `MultiLabelHead`, `vgg16_features`, `to_grid` (chapter 2);
- `base`: the `Captioner` contract (`prepare`, `init_state`, `step`, teacher-forced
  `forward`) with `StepOutput` and `CaptionerOutput` (chapter 3);
- `adaptive`: captioner A, adaptive attention with a visual sentinel (chapter 3);
- `multihead`: captioner B, multi-head attention (chapter 4);
- `decoding`: greedy and beam search over `step` (chapter 3);
- `lstm`: the LSTM cell written with the LRP rule operations.
"""

from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner, CaptionerOutput, StepOutput
from captionlib.models.decoding import (
    DecodedCaption,
    beam_search,
    greedy,
    remove_bad_endings,
    reorder_state,
)
from captionlib.models.encoder import (
    MultiLabelHead,
    SmallVGG,
    from_grid,
    to_grid,
    vgg16_features,
)
from captionlib.models.lstm import LSTMCell
from captionlib.models.multihead import MultiHeadCaptioner

__all__ = [
    "AdaptiveAttentionCaptioner",
    "Captioner",
    "CaptionerOutput",
    "DecodedCaption",
    "LSTMCell",
    "MultiHeadCaptioner",
    "MultiLabelHead",
    "SmallVGG",
    "StepOutput",
    "beam_search",
    "from_grid",
    "greedy",
    "remove_bad_endings",
    "reorder_state",
    "to_grid",
    "vgg16_features",
]
