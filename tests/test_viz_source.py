"""Source listings fit the book's column and show only the lines asked for (chapter 6)."""

from __future__ import annotations

import pytest

from captionlib.viz.source import fit_line, source_listing


def sample(values: list[float], scale: float = 2.0) -> list[float]:
    """A docstring the listing leaves out.

    Two lines long.
    """
    doubled = [scale * value for value in values]  # a comment that makes this line far too long
    total = sum(doubled)
    return [value / total for value in doubled]


NAME = f"{sample.__module__}.sample"


def test_whole_function_without_its_docstring() -> None:
    listing = source_listing(sample)
    lines = str(listing).splitlines()
    assert lines[0] == f"# {NAME}"
    assert lines[1] == "def sample(values: list[float], scale: float = 2.0) -> list[float]:"
    assert "docstring" not in str(listing)
    assert lines[2] == "    # a comment that makes this line far too long"
    assert lines[3] == "    doubled = [scale * value for value in values]"
    assert len(lines) == 6
    assert all(len(line) <= 80 for line in lines)
    assert listing._repr_markdown_().startswith(f"```python\n# {NAME}\n")


def test_excerpt_is_dedented_and_named_as_one() -> None:
    listing = source_listing(sample, start="total =", stop="return")
    assert str(listing).splitlines() == [
        f"# {NAME} (excerpt)",
        "total = sum(doubled)",
        "return [value / total for value in doubled]",
    ]
    assert "Two lines long." in str(source_listing(sample, docstring=True))
    with pytest.raises(ValueError, match=f"no line of {NAME} contains"):
        source_listing(sample, start="missing")


def test_long_calls_split_at_the_outermost_comma_and_align() -> None:
    line = "    (gradient,) = torch.autograd.grad(logits, leaf, one_hot_target(logits, target))"
    assert fit_line(line, 70) == [
        "    (gradient,) = torch.autograd.grad(logits, leaf,",
        "                                      one_hot_target(logits, target))",
    ]
    # a comma inside a string is not a place to split
    assert fit_line('    f("a, b, c, d", x)', 20) == ['    f("a, b, c, d",', "      x)"]
    # no comma inside brackets: split at spaces, comments stay comments
    assert fit_line("    # " + "word " * 10, 30) == [
        "    # word word word word word",
        "    # word word word word word",
    ]
    assert fit_line("x = a + b + c + d", 12) == ["x = a + b +", "        c +", "        d"]
    assert fit_line("short", 10) == ["short"]
