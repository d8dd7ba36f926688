"""Behaviour preservation: every shipped detector family (small widths) gives the training losses
and detections recorded from the code before the query-detector refactor.

The models, weights (filled from their state-dict keys) and batch come from
``reference/reference_models.py``; the values from ``reference/query_detector_outputs.pt``
(written by ``reference/record_reference_outputs.py``; its commit says on which code). Float64
families must agree within 1e-6, float32 ones (with a Faster R-CNN head) within 1e-4 (relative to
max(1, |value|)).

Why not tighter: the "float64" families keep the official float32 pieces (the sine position
embeddings are computed in float32 as the official DETR code does; the dense heads' level scales),
and float32 sin / cos / exp differ by an ulp between CPUs (vectorised kernels). The first
families were recorded on an AMD EPYC machine; on an Intel Xeon (AVX-512) the same code, torch
2.14.1 and inputs differ from them by at most 2.5e-7 in the float64 families and 1.1e-5 in the
float32 ones (measured 2026-12-07; before that the bounds were 1e-9 / 1e-6, which held on the
recording machine only). On one machine two runs are bit-identical (the recorder checks it). A
change of behaviour moves values by orders of magnitude more than these bounds.

Padding-as-image (LSJ) entries ("*_lsj") are compared within at least 1e-6 in every family: the recorded
code normalised their float32 targets by the image and rescaled them to the padded size, and
rescaled predictions twice (through a float32 cast); the refactored code normalises once by the
padded size, which moves values by float32 rounding (measured: at most 1.9e-7 on the losses,
2.3e-7 on the detections).
"""
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))

import reference_models as rm  # noqa: E402

REFERENCE = torch.load(os.path.join(HERE, "reference", "query_detector_outputs.pt"), weights_only=True)


def test_the_batch_needs_no_particular_level_mask_rule():
    # padding exists, and every level's nearest-neighbour mask equals the convolution-consistent
    # one, so the reference does not depend on how level masks are derived
    assert rm.level_masks_agree()
    assert all((h, w) != (256, 256) for h, w in rm.IMAGE_SIZES)


def test_every_family_is_recorded():
    assert set(REFERENCE) == set(rm.FAMILIES)


def _compare(actual, expected, tol, where, stats):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            _compare(actual[k], expected[k], tol, f"{where}.{k}", stats)
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, tol, f"{where}[{i}]", stats)
    else:
        assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
            f"{where}: {actual.shape} {actual.dtype} != {expected.shape} {expected.dtype}")
        if not expected.is_floating_point():
            assert torch.equal(actual, expected), f"{where}: {actual} != {expected}"
            stats["values"] += expected.numel()
            return
        diff = (actual - expected).abs() / expected.abs().clamp(min=1)
        worst = float(diff.max()) if diff.numel() else 0.0
        stats["values"] += expected.numel()
        stats["max_diff"] = max(stats["max_diff"], worst)
        assert worst <= tol, f"{where}: differs by {worst:.3g} (tolerance {tol})"


@pytest.mark.parametrize("family", list(rm.FAMILIES))
def test_outputs_equal_the_reference(family):
    expected = REFERENCE[family]
    tol = 1e-6 if bool(expected["float64"]) else 1e-4
    actual = rm.run_family(family)
    assert actual.keys() == expected.keys()
    for key in expected:
        stats = {"values": 0, "max_diff": 0.0}
        _compare(actual[key], expected[key], max(tol, 1e-6) if key.endswith("_lsj") else tol, f"{family}.{key}",
                 stats)
        print(f"{family}.{key}: {stats['values']} values, max relative difference {stats['max_diff']:.3g}")
