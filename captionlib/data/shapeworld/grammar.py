"""The ShapeWorld caption grammar (chapter 1) and the words that name each category.

Five captions per image come from a small grammar with synonyms (SYNONYMS); bigger objects
are named more often, as in COCO. `object_words` maps a caption back to the categories it
names (chapter 10's CHAIR).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from captionlib.data.shapeworld.config import SKY_CATEGORIES
from captionlib.data.shapeworld.scenes import _Group, _Object, _Scene

_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {  # (singular, plural), main word first
    "boat": (("boat", "boats"), ("ship", "ships"), ("sailboat", "sailboats")),
    "fish": (("fish", "fish"), ("fish", "fishes")),
    "bird": (("bird", "birds"),),
    "plane": (("plane", "planes"), ("airplane", "airplanes"), ("jet", "jets")),
    "tree": (("tree", "trees"),),
    "house": (("house", "houses"), ("home", "homes"), ("cabin", "cabins")),
    "car": (("car", "cars"), ("automobile", "automobiles")),
    "dog": (("dog", "dogs"), ("puppy", "puppies")),
    "ball": (("ball", "balls"),),
    "person": (("person", "people"), ("man", "men"), ("woman", "women"), ("child", "children")),
}
SYNONYMS: dict[str, tuple[str, ...]] = {
    category: tuple(dict.fromkeys(word for pair in pairs for word in pair))
    for category, pairs in _NOUNS.items()
}
_WORD_TO_CATEGORY = {word: category for category, words in SYNONYMS.items() for word in words}
_TOKEN = re.compile(r"[a-z]+")

_SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
_NUMBERS = {2: "two", 3: "three"}
_GROUND_ON = {  # where a ground object is
    "grass": ("on the grass", "in a field", "in a grassy field", "on a lawn", "in a meadow"),
    "water": ("on the water", "on a lake", "on the sea", "on a river"),
    "sand": ("on the sand", "on the beach", "on a sandy beach", "in the desert"),
    "road": ("on the road", "on a street", "on the street"),
    "snow": ("in the snow", "on the snow", "in a snowy field"),
}
_GROUND_NP = {  # the ground as a noun phrase
    "grass": ("the grass", "a field", "a grassy field", "a meadow"),
    "water": ("the water", "a lake", "the sea", "a river"),
    "sand": ("the sand", "a beach", "a sandy beach", "the desert"),
    "road": ("the road", "a street"),
    "snow": ("the snow", "a snowy field", "a snowy landscape"),
}
_IN_WATER = ("in the water", "in a lake", "in the sea", "in a river")
_SKY = ("in the sky", "in the blue sky", "through the sky", "across the sky")
_VERBS = {  # participles; "" = no verb
    "boat": ("floating", "sailing", "drifting", ""),
    "fish": ("swimming",),
    "bird": ("flying", "soaring", "gliding"),
    "plane": ("flying", "soaring", "gliding"),
    "tree": ("standing", "growing", ""),
    "house": ("standing", "", ""),
    "car": ("driving", "parked", "moving", ""),
    "dog": ("running", "playing", "standing", "sitting", ""),
    "ball": ("lying", ""),
    "person": ("walking", "standing", "running", ""),
}
_STRANDED = ("lying", "resting", "stranded", "sitting", "")  # boats out of the water
_OFFROAD = ("parked", "standing", "driving", "")  # cars away from roads
_FRAMES = ("a picture of", "an image of", "a photo of", "a view of")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(rng: np.random.Generator, group: _Group) -> str:
    """'a small red boat', 'a man in a blue shirt', 'two dogs', ..."""
    pairs = _NOUNS[group.category]
    singular, plural = pairs[0] if rng.random() < 0.6 else _pick(rng, pairs)
    colours = {obj.colour for obj in group.objects}
    colour = next(iter(colours)) if len(colours) == 1 and rng.random() < 0.55 else None
    person = group.category == "person"
    words = []
    if len(group.objects) == 1:
        if rng.random() < 0.3:
            words.append(_pick(rng, _SIZE_WORDS[group.objects[0].size]))
        if colour and not person:
            words.append(colour)
        phrase = _with_article(" ".join([*words, singular]))
    else:
        if colour and not person:
            words.append(colour)
        phrase = " ".join([_NUMBERS[len(group.objects)], *words, plural])
    if colour and person:
        phrase += _pick(rng, (f" in {colour}", f" in a {colour} shirt", f" wearing {colour}"))
    return phrase


def _location(rng: np.random.Generator, group: _Group, ground: str, with_ground: bool) -> str:
    """What the group does and where: 'floating on the water', 'flying in the sky', ..."""
    category = group.category
    if category in SKY_CATEGORIES:
        phrase = f"{_pick(rng, _VERBS[category])} {_pick(rng, _SKY)}"
        if with_ground:
            phrase += f" {_pick(rng, ('above', 'over'))} {_pick(rng, _GROUND_NP[ground])}"
        return phrase
    if category == "fish":
        return f"swimming {_pick(rng, _IN_WATER)}" if with_ground else "swimming"
    verbs = _VERBS[category]
    if category == "boat" and ground != "water":
        verbs = _STRANDED
    elif category == "car" and ground != "road":
        verbs = _OFFROAD
    verb = _pick(rng, verbs)
    where = _pick(rng, _GROUND_ON[ground]) if with_ground else ""
    return " ".join(part for part in (verb, where) if part)


def _relation(a: _Object, b: _Object) -> tuple[str, ...]:
    """Spatial phrases true of `a` relative to `b` (a is a sky object or both are not)."""
    if a.in_sky and not b.in_sky:
        return ("above", "over")
    ax0, _, ax1, ay1 = a.box
    bx0, _, bx1, by1 = b.box
    apart = ax1 < bx0 or bx1 < ax0
    if {a.category, b.category} == {"fish", "boat"} and not apart:
        fish, boat = (a, b) if a.category == "fish" else (b, a)
        if fish.box[3] > boat.box[3]:  # the fish swims lower in the image than the hull
            return ("under", "below") if a is fish else ("above", "over")
    options = ["next to", "near", "beside"] if apart else ["near"]
    if ax1 < bx0:
        options.append("to the left of")
    elif ax0 > bx1:
        options.append("to the right of")
    elif ay1 > by1 + 6:
        options.append("in front of")
    elif by1 > ay1 + 6:
        options.append("behind")
    return tuple(options)


def _is_close(a: _Object, b: _Object, size: int) -> bool:
    gap = max(a.box[0] - b.box[2], b.box[0] - a.box[2], 0)
    return gap < 0.15 * size and abs(a.base - b.base) < 0.12 * size


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _pair_caption(rng: np.random.Generator, first: _Group, second: _Group, scene: _Scene) -> str:
    """A caption naming two groups: an interaction, a spatial relation or 'and'."""
    where = _pick(rng, _GROUND_ON[scene.ground]) if rng.random() < 0.6 else ""
    if first.category == "ball" or (second.in_sky and not first.in_sky):
        first, second = second, first
    a, b = first.objects[0], second.objects[0]
    single = len(first.objects) == len(second.objects) == 1
    kinds = {first.category, second.category}
    np_a, np_b = _noun_phrase(rng, first), _noun_phrase(rng, second)
    if single and "ball" in kinds and kinds & {"dog", "person"} and _is_close(a, b, scene.size):
        verbs = ("playing with", "chasing", "with") if a.category == "dog" else ("playing with",)
        return _join(np_a, _pick(rng, verbs), np_b, where)
    if single and kinds == {"person", "dog"} and rng.random() < 0.5:
        person, dog = (np_a, np_b) if a.category == "person" else (np_b, np_a)
        return _join(person, _pick(rng, ("with", "walking")), dog, where)
    both_sky = first.in_sky and second.in_sky
    if single and rng.random() < 0.6:
        doing = _location(rng, first, scene.ground, with_ground=False)
        return _join(np_a, doing, _pick(rng, _relation(a, b)), np_b, "" if both_sky else where)
    if both_sky:
        return f"{np_a} and {np_b} {_pick(rng, ('flying', 'soaring'))} {_pick(rng, _SKY)}"
    if first.in_sky:
        return _join(np_a, "flying above", np_b, where)
    lead = _pick(rng, ("", "there is", "a picture of")) if where else ""
    if lead == "there is" and len(first.objects) > 1:
        lead = "there are"
    return _join(lead, np_a, "and", np_b, where)


def _single_caption(rng: np.random.Generator, group: _Group, scene: _Scene) -> str:
    """A caption naming one group, with or without the ground."""
    with_ground = rng.random() < 0.8
    template = int(rng.integers(4))
    if template == 0 and not group.in_sky and with_ground:
        return f"{_pick(rng, _GROUND_NP[scene.ground])} with {_noun_phrase(rng, group)}"
    phrase = f"{_noun_phrase(rng, group)} {_location(rng, group, scene.ground, with_ground)}"
    if template == 1:
        return f"there {'is' if len(group.objects) == 1 else 'are'} {phrase}"
    if template == 2:
        return f"{_pick(rng, _FRAMES)} {phrase}"
    return phrase


def _triple_caption(rng: np.random.Generator, groups: list[_Group], scene: _Scene) -> str:
    first, second, third = (_noun_phrase(rng, group) for group in groups)
    return f"{first}, {second} and {third} {_pick(rng, _GROUND_ON[scene.ground])}"


def _captions(rng: np.random.Generator, scene: _Scene, count: int = 5) -> list[str]:
    """`count` distinct captions; bigger objects are named more often, as in COCO."""
    groups = scene.groups()
    weights = np.sqrt([group.area for group in groups]).astype(np.float64)
    captions: list[str] = []
    for _ in range(20 * count):
        keys = rng.random(len(groups)) ** (1 / weights)  # weighted order without replacement
        order = [groups[i] for i in np.argsort(-keys)]
        named = 1 + (rng.random() < 0.5) + (rng.random() < 0.15)
        grounded = all(not group.in_sky for group in order[:3])
        if named >= 3 and len(order) >= 3 and grounded:
            caption = _triple_caption(rng, order[:3], scene)
        elif named >= 2 and len(order) >= 2:
            caption = _pair_caption(rng, order[0], order[1], scene)
        else:
            caption = _single_caption(rng, order[0], scene)
        caption = " ".join(caption.split())
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            return captions
    while len(captions) < count:  # a scene with little to say: repeat captions
        captions.append(captions[len(captions) % len(captions)])
    return captions


def object_words(caption: str) -> set[str]:
    """The categories a caption names through any of their SYNONYMS (chapter 10's CHAIR)."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    tokens = _TOKEN.findall(caption.lower())
    return {_WORD_TO_CATEGORY[token] for token in tokens if token in _WORD_TO_CATEGORY}
