"""parse_caps: the --cap option of ``python crossmed.py build``."""

from __future__ import annotations

import pytest

from builder.cli import parse_caps
from builder.pipeline import DEFAULT_CAPS


def test_slug_and_display_name_accepted() -> None:
    caps = parse_caps(["xray-lung-segmentation=7", "MRI/Brain/Classification=0"], no_caps=False)

    assert caps is not None
    assert caps["xray-lung-segmentation"] == 7
    assert caps["mri-brain-classification"] == 0
    assert caps["ct-lung-classification"] == DEFAULT_CAPS["ct-lung-classification"]


def test_no_caps_returns_none() -> None:
    assert parse_caps(["xray-lung-segmentation=7"], no_caps=True) is None


def test_unknown_triplet_names_flag_and_slugs() -> None:
    with pytest.raises(ValueError, match=r"Invalid --cap 'foo=3': Unknown triplet 'foo'") as caught:
        parse_caps(["foo=3"], no_caps=False)

    assert "xray-lung-classification" in str(caught.value)


def test_non_integer_value_rejected() -> None:
    with pytest.raises(ValueError, match=r"Invalid --cap 'xray-lung-segmentation=abc'"):
        parse_caps(["xray-lung-segmentation=abc"], no_caps=False)
