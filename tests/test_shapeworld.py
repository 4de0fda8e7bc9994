"""ShapeWorld generator: determinism, COCO validity, biases, captions, errors (chapter 1)."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from captionlib.data import shapeworld as sw
from captionlib.data.shapeworld import (
    CATEGORIES,
    SPLITS,
    SYNONYMS,
    SceneBiases,
    ShapeWorldConfig,
    bias_statistics,
    ensure_shapeworld,
    generate,
    object_words,
)
from captionlib.data.shapeworld import write as sw_write

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = ShapeWorldConfig(n_train=40, n_val=40, n_test=40, n_shifted=40)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SMALL, tmp_path_factory.mktemp("shapeworld") / "seed0")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_same_seed_gives_identical_files(small_folder: Path, tmp_path: Path) -> None:
    again = _files(generate(SMALL, tmp_path / "again"))
    first = _files(small_folder)
    assert sorted(first) == sorted(again)
    assert len([name for name in first if name.endswith(".png")]) == 160
    assert all(first[name] == again[name] for name in first)
    # every split draws its own scenes: first images of train and val differ
    assert first["images/train/000001.png"] != first["images/val/000041.png"]


def test_worker_count_does_not_change_the_output(small_folder: Path, tmp_path: Path) -> None:
    config = replace(SMALL, n_val=0, n_test=0, n_shifted=0)
    one = _files(generate(config, tmp_path / "one", workers=1))
    two = _files(generate(config, tmp_path / "two", workers=2))
    assert one == two
    reference = _files(small_folder)
    assert one["images/train/000007.png"] == reference["images/train/000007.png"]


def test_different_seed_gives_different_data(small_folder: Path, tmp_path: Path) -> None:
    other = _files(generate(replace(SMALL, seed=1, n_val=0, n_test=0, n_shifted=0), tmp_path))
    first = _files(small_folder)
    assert other["captions_train.json"] != first["captions_train.json"]
    pngs = [name for name in other if name.endswith(".png")]
    assert sum(other[name] != first[name] for name in pngs) == len(pngs)


@pytest.mark.parametrize("split", SPLITS)
def test_files_are_valid_coco(small_folder: Path, split: str) -> None:
    captions = _quiet_coco(small_folder / f"captions_{split}.json")
    instances = _quiet_coco(small_folder / f"instances_{split}.json")
    assert sorted(captions.getImgIds()) == sorted(instances.getImgIds())
    assert len(captions.getImgIds()) == 40
    assert [c["name"] for c in instances.loadCats(instances.getCatIds())] == CATEGORIES
    assert instances.getCatIds() == list(range(1, 11))
    for image_id in captions.getImgIds():
        texts = [a["caption"] for a in captions.imgToAnns[image_id]]
        assert len(texts) == 5 and len(set(texts)) >= 3
        assert all(text == text.lower() and text.strip() == text for text in texts)
        image = instances.imgs[image_id]
        assert image["ground"] in sw.GROUNDS
        pixels = Image.open(small_folder / "images" / image["file_name"])
        assert pixels.mode == "RGB" and pixels.size == (112, 112)
        objects = instances.imgToAnns[image_id]
        assert 1 <= len(objects) <= 3
        for annotation in objects:
            assert annotation["category_id"] in instances.cats
            assert annotation["iscrowd"] == 0
            assert set(annotation["attributes"]) == {"colour", "size"}
            mask = instances.annToMask(annotation).astype(bool)  # [H, W]
            ys, xs = np.nonzero(mask)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert annotation["bbox"] == [int(v) for v in tight]
            x, y, w, h = annotation["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 112 and y + h <= 112
            assert annotation["area"] == mask.sum() == mask_utils.area(annotation["segmentation"])
            assert annotation["area"] >= 14 * 14 * 0.1  # not a sliver


def test_masks_are_disjoint_visible_pixels(small_folder: Path) -> None:
    instances = _quiet_coco(small_folder / "instances_train.json")
    for image_id in instances.getImgIds():
        masks = [instances.annToMask(a) for a in instances.imgToAnns[image_id]]
        assert np.stack(masks).sum(axis=0).max() == 1


def test_captions_name_only_present_objects(small_folder: Path) -> None:
    captions = _quiet_coco(small_folder / "captions_train.json")
    instances = _quiet_coco(small_folder / "instances_train.json")
    named_any = 0
    for image_id in captions.getImgIds():
        present = {instances.cats[a["category_id"]]["name"] for a in instances.imgToAnns[image_id]}
        named = set()
        for annotation in captions.imgToAnns[image_id]:
            words = object_words(annotation["caption"])
            assert words, annotation["caption"]
            assert words <= present, (annotation["caption"], present)
            named |= words
        named_any += named == present
    assert named_any >= 30  # most images have every object named by some caption


def test_object_words_on_known_captions() -> None:
    assert object_words("a red boat floating on the water") == {"boat"}
    assert object_words("Two Puppies chasing a ball on the grass.") == {"dog", "ball"}
    assert object_words("there is a jet flying in the sky above the snow") == {"plane"}
    assert object_words("a man in a blue shirt next to a sailboat") == {"person", "boat"}
    assert object_words("a snowy field with nothing") == set()
    assert object_words("a sailing trip to the ballpark") == set()  # whole words only
    assert all(
        object_words(word) == {category} for category in SYNONYMS for word in SYNONYMS[category]
    )
    assert set(SYNONYMS) == set(CATEGORIES)
    with pytest.raises(TypeError, match="caption"):
        object_words(None)  # type: ignore[arg-type]


def test_bias_statistics_follow_the_config(tmp_path: Path) -> None:
    config = ShapeWorldConfig(n_train=300, n_val=0, n_test=0, n_shifted=300)
    folder = generate(config, tmp_path)
    train = bias_statistics(folder / "instances_train.json")
    shifted = bias_statistics(folder / "instances_shifted.json")
    assert train["n_images"] == shifted["n_images"] == 300
    for split, stats, biases in (
        ("train", train, config.biases),
        ("shifted", shifted, config.shifted_biases),
    ):
        for name, wanted in asdict(biases).items():
            assert stats["support"][name] >= 30, (split, name)
            assert stats["rates"][name] == pytest.approx(wanted, abs=0.15), (split, name)
    # The categories that only come from bias rules never appear where the rules forbid it.
    assert train["category_given_ground"]["water"]["fish"] > 0.2
    for ground in ("grass", "sand", "road", "snow"):
        assert train["category_given_ground"][ground]["fish"] == 0.0
    assert train["category_given_ground"]["road"]["boat"] == 0.0
    assert train["category_given_ground"]["water"]["car"] == 0.0


def test_bias_statistics_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        bias_statistics(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="broken.json"):
        bias_statistics(broken)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed": -1}, "seed"),
        ({"image_size": 32}, "image_size"),
        ({"n_train": -5}, "n_train"),
        ({"n_val": 1.5}, "n_val"),
        ({"min_objects": 0}, "min_objects"),
        ({"max_objects": 4}, "max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"biases": {"p_boat_given_water": 1.5}}, "p_boat_given_water"),
        ({"shifted_biases": {"p_ball_given_cat": 0.5}}, "p_ball_given_cat"),
        ({"biases": "strong"}, "biases"),
        ({"generator_version": 0}, "generator_version"),
    ],
)
def test_invalid_config_fields_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ShapeWorldConfig(**change)


def test_config_round_trips_through_json() -> None:
    config = ShapeWorldConfig(seed=3, biases=SceneBiases(p_ball_given_dog=0.5))
    assert ShapeWorldConfig(**json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(ValueError, match="p_car_given_road"):
        SceneBiases(p_car_given_road=-0.1)


def test_ensure_shapeworld_is_atomic_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path))
    config = ShapeWorldConfig(n_train=6, n_val=2, n_test=2, n_shifted=2)
    render = sw_write._render_one  # generate() calls it from the write module
    calls = []

    def failing(task):  # fails on the first image of the test split
        calls.append(task)
        if task[1] == "test":
            raise RuntimeError("interrupted")
        return render(task)

    monkeypatch.setattr(sw_write, "_render_one", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_shapeworld(config, progress=False)
    assert len(calls) == 9  # train and val were written before the failure
    # nothing half-written: only the builders' (empty) lock file stays
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]

    monkeypatch.setattr(sw_write, "_render_one", render)
    folder = ensure_shapeworld(config, progress=False)
    assert folder.parent == tmp_path and folder.name.startswith("shapeworld-")
    assert (folder / "instances_shifted.json").is_file()
    assert len(list((folder / "images").rglob("*.png"))) == 12
    stamp = (folder / "captions_train.json").stat().st_mtime_ns
    assert ensure_shapeworld(config, progress=False) == folder  # cached: not regenerated
    assert (folder / "captions_train.json").stat().st_mtime_ns == stamp
    assert ensure_shapeworld(replace(config, seed=1), progress=False) != folder


def test_scene_captions_stay_above_the_next_row(small_folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captionlib.viz.scenes import show_scenes

    instances = json.loads((small_folder / "instances_val.json").read_text())
    ids = [image["id"] for image in instances["images"][:8]]
    axes = show_scenes(small_folder, "val", ids, n_captions=5)  # 2 rows of 4
    figure = axes[0].figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    heights = [axis.get_position().height * figure.get_figheight() for axis in axes]
    assert min(heights) > 1.5  # inches: the images keep their size (a panel is 1.8 wide)
    lowest_text = min(axis.get_tightbbox(renderer).y0 for axis in axes[:4])  # captions, row 1
    highest_title = max(axis.title.get_window_extent(renderer).y1 for axis in axes[4:])
    assert lowest_text > highest_title  # the captions of row 1 end above row 2's titles
    plt.close(figure)


def test_scene_figures(small_folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captionlib.viz.scenes import (
        cooccurrence_table,
        plot_caption_statistics,
        plot_cooccurrence,
        show_scenes,
    )

    instances = json.loads((small_folder / "instances_val.json").read_text())
    ids = [image["id"] for image in instances["images"][:3]]
    axes = show_scenes(small_folder, "val", ids)
    for axis, image_id in zip(axes, ids, strict=True):
        count = sum(a["image_id"] == image_id for a in instances["annotations"])
        assert len(axis.patches) == count  # one box per object
        assert len(axis.images) == 2  # pixels + mask overlay
    with pytest.raises(ValueError, match="999999"):
        show_scenes(small_folder, "val", [999999])
    with pytest.raises(FileNotFoundError, match="captions_nope.json"):
        show_scenes(small_folder, "nope", ids)
    stats = bias_statistics(small_folder / "instances_val.json")
    matrix, grounds, categories = cooccurrence_table(stats)
    assert matrix.shape == (5, 10) and categories == CATEGORIES
    water, boat = grounds.index("water"), categories.index("boat")
    assert matrix[water, boat] == stats["rates"]["p_boat_given_water"]
    figure = plot_cooccurrence(stats, bias_statistics(small_folder / "instances_shifted.json"))
    assert len(figure.axes) == 4  # two heat maps, their colour bar, the bar chart
    figure = plot_caption_statistics(["a dog on the grass", "two red boats"], top=3)
    assert [p.get_height() for p in figure.axes[1].patches] == [1, 1, 1]
    with pytest.raises(ValueError, match="no captions"):
        plot_caption_statistics([])
    plt.close("all")
