"""captionlib: the helper library of the book *Explain and Improve Image Captioners*.

Each module holds one concept and its docstring names the chapter that introduces it.
Nothing here touches the network at import time.
"""

from captionlib.utils import data_dir, seed_everything, select_device

__all__ = ["data_dir", "seed_everything", "select_device"]
__version__ = "0.1.0"
