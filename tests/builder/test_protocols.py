"""Protocol definitions: every config's guarantee, checked on the definitions themselves."""

from __future__ import annotations

import pytest

from builder.mat import (
    CT_LUNG_CLASSIFICATION,
    MRI_BRAIN_CLASSIFICATION,
    MRI_BRAIN_SEGMENTATION,
    TRIPLETS,
    XRAY_LUNG_CLASSIFICATION,
    XRAY_LUNG_SEGMENTATION,
)
from builder.protocols import all_protocols, get_protocol, headline_protocols, target_protocols


def test_headline_names():
    assert [protocol.name for protocol in headline_protocols()] == [
        "all", "related", "unrelated", "zero_overlap", "cross_task",
    ]


def test_related_and_unrelated_share_test_triplets():
    related, unrelated = get_protocol("related"), get_protocol("unrelated")
    assert related.test == unrelated.test == (XRAY_LUNG_SEGMENTATION, MRI_BRAIN_CLASSIFICATION)


def test_unrelated_hides_targets_but_sees_each_factor():
    unrelated = get_protocol("unrelated")
    assert set(unrelated.train) == {XRAY_LUNG_CLASSIFICATION, MRI_BRAIN_SEGMENTATION, CT_LUNG_CLASSIFICATION}
    assert not set(unrelated.train) & set(unrelated.test)
    assert unrelated.seen_factors() == {"modality": True, "anatomy": True, "task": True}


def test_related_trains_on_targets():
    related = get_protocol("related")
    assert set(related.test) <= set(related.train)


def test_zero_overlap_shares_no_factor():
    zero = get_protocol("zero_overlap")
    assert zero.test == (MRI_BRAIN_CLASSIFICATION,)
    assert zero.train == (XRAY_LUNG_SEGMENTATION,)
    assert zero.seen_factors() == {"modality": False, "anatomy": False, "task": False}


def test_cross_task_splits_by_task():
    cross = get_protocol("cross_task")
    assert {triplet.task for triplet in cross.train} == {"Classification"}
    assert {triplet.task for triplet in cross.test} == {"Segmentation"}


@pytest.mark.parametrize("protocol", target_protocols(), ids=lambda protocol: protocol.name)
def test_target_config_guarantee(protocol):
    (target,) = protocol.test
    assert protocol.name.endswith(target.slug)
    if protocol.family == "related":
        assert target in protocol.train
    elif protocol.family == "unrelated":
        assert target not in protocol.train
        assert len(protocol.train) == len(TRIPLETS) - 1
    elif protocol.family == "zero_overlap":
        assert protocol.train
        assert all(triplet.shares_nothing_with(target) for triplet in protocol.train)
    else:
        assert protocol.family == "cross_task"
        assert target.task == "Segmentation"
        assert all(triplet.task == "Classification" for triplet in protocol.train)


def test_every_target_has_three_families():
    names = {protocol.name for protocol in target_protocols()}
    for triplet in TRIPLETS:
        for family in ("related", "unrelated", "zero_overlap"):
            assert f"{family}-{triplet.slug}" in names


def test_config_names_unique():
    names = [protocol.name for protocol in all_protocols()]
    assert len(names) == len(set(names))


def test_unknown_config_raises():
    with pytest.raises(ValueError, match="Unknown CrossMed config 'unrelatd'.*unrelated"):
        get_protocol("unrelatd")
