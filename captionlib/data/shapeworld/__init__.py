"""ShapeWorld: a synthetic captioning data set written in COCO format (chapter 1).

Every image is a sky above one ground type (grass, water, sand, road or snow) with one to
three objects from ten drawable categories, each with a colour and a size. Five captions per
image come from a small grammar with synonyms. The training split has co-occurrence biases
that a captioner can learn as shortcuts (boats on water, cars on roads, dogs with balls); the
``shifted`` split breaks them, which makes object hallucination measurable (chapter 10).

::

    folder = ensure_shapeworld()               # data/shapeworld-<hash>/, generated once
    coco = COCO(folder / "instances_train.json")
    stats = bias_statistics(folder / "instances_shifted.json")

Layout of a generated folder (``file_name`` is relative to ``images/``)::

    captions_<split>.json    COCO captions: images, annotations {id, image_id, caption}
    instances_<split>.json   COCO instances: boxes, RLE masks of the visible pixels, categories;
                             images carry ``ground`` and ``horizon``, annotations ``attributes``
    images/<split>/<image id:06d>.png

Everything is a function of the config: image ``i`` of a split is drawn from its own NumPy
generator seeded with ``(seed, split, i)``, so the files are byte-identical across runs and
independent of how many worker processes drew them.

The package's modules: `config` (ShapeWorldConfig, SceneBiases and the constants),
`scenes` (sampling scenes), `render` (drawing images and masks), `grammar` (captions),
`write` (the COCO files, `generate`, `ensure_shapeworld`) and `statistics`
(`bias_statistics`). Import everything from the package itself.
"""

from captionlib.data.shapeworld.config import (
    BIAS_FIELDS,
    BOAT_LAND_GROUNDS,
    CAR_OFFROAD_GROUNDS,
    CATEGORIES,
    CATEGORY_IDS,
    GENERATOR_VERSION,
    GROUNDS,
    SHIFTED_BIASES,
    SKY_CATEGORIES,
    SPLITS,
    SUPERCATEGORIES,
    SceneBiases,
    ShapeWorldConfig,
)
from captionlib.data.shapeworld.grammar import SYNONYMS, object_words
from captionlib.data.shapeworld.scenes import COLOURS, RGB
from captionlib.data.shapeworld.statistics import bias_statistics
from captionlib.data.shapeworld.write import ensure_shapeworld, generate, main

__all__ = [
    "BIAS_FIELDS",
    "BOAT_LAND_GROUNDS",
    "CAR_OFFROAD_GROUNDS",
    "CATEGORIES",
    "CATEGORY_IDS",
    "COLOURS",
    "GENERATOR_VERSION",
    "GROUNDS",
    "RGB",
    "SHIFTED_BIASES",
    "SKY_CATEGORIES",
    "SPLITS",
    "SUPERCATEGORIES",
    "SYNONYMS",
    "SceneBiases",
    "ShapeWorldConfig",
    "bias_statistics",
    "ensure_shapeworld",
    "generate",
    "main",
    "object_words",
]
