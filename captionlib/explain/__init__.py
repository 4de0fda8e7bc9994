"""Explanations for attention captioners (chapters 5–8).

`explain(model, encoder, images, caption_ids=None, method="lrp")` is the one entry point;
methods are registered by name in `METHODS` (`register_method` adds one).
"""

from captionlib.explain.api import METHODS, explain, register_method
from captionlib.explain.lrp import Explanation

__all__ = ["METHODS", "Explanation", "explain", "register_method"]
