"""QC pieces with known answers: which scans to warn about and draw, and what a QC picture shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rayspine.report import qc


def _scans(counts, sites=None, status=None) -> pd.DataFrame:
    n = len(counts)
    return pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "site": sites or ["a"] * n,
                         "status": status or ["ok"] * n, "n_discs": counts})  # fmt: skip


def test_scans_with_another_number_of_discs_than_the_archives_mode_are_warned_about():
    scans = _scans([5, 5, 7, 5, 4, 5, 0], status=["ok"] * 6 + ["unreadable"])
    expected, odd = qc.disc_count_warnings(scans)
    assert expected == 5
    assert odd["scan_id"].tolist() == ["s2", "s4"] and odd["expected"].tolist() == [5, 5]  # most different first
    assert qc.disc_count_warnings(_scans([6, 6, 6]))[1].empty
    assert qc.disc_count_warnings(_scans([0], status=["unreadable"]))[0] is None


def test_the_suspicious_scans_are_drawn_first_then_a_few_per_site():
    scans = _scans([5] * 8, sites=["a", "a", "a", "b", "b", "b", "c", "c"], status=["ok"] * 7 + ["unreadable"])
    chosen = qc.choose_qc_scans(scans, ["s5", "s2", "s5", "s7", "nope"], per_site=2)
    assert chosen == ["s5", "s2", "s0", "s1", "s3", "s4", "s6"]  # s7 was not scored: nothing to draw
    assert qc.choose_qc_scans(scans, ["s5", "s2"], per_site=0, limit=1) == ["s5"]


def test_disc_names_come_from_the_table_when_it_has_them():
    discs = pd.DataFrame({"level": [1, 2, 24], "level_name": ["L6/S1", None, ""]})
    assert qc.disc_names(discs).tolist() == ["L6/S1", "L4/L5", "level 24"]
    assert qc.disc_names(discs.drop(columns="level_name")).tolist() == ["L5/S1", "L4/L5", "level 24"]


def _phantom():
    """Two box discs on a 40 x 60 x 80 grid: L5/S1 (201) low, L4/L5 (202) higher and further forward."""
    labels = np.zeros((40, 60, 80), np.uint8)
    labels[10:30, 20:40, 10:15] = 201
    labels[12:28, 10:30, 40:43] = 202
    image = np.random.default_rng(0).normal(100, 10, labels.shape).astype(np.float32) + 50 * (labels > 0)
    return image, labels


def test_disc_boxes_give_each_levels_centre():
    _, labels = _phantom()
    boxes = qc.disc_boxes(labels)
    assert sorted(boxes) == [1, 2]
    np.testing.assert_allclose(boxes[1][1], [19.5, 29.5, 12.0])
    np.testing.assert_allclose(boxes[2][1], [19.5, 19.5, 41.0])
    assert boxes[2][0] == (slice(12, 28), slice(10, 30), slice(40, 43))


def test_a_qc_picture_names_every_disc_and_shows_its_flags():
    image, labels = _phantom()
    fig = qc.qc_figure(image, labels, (1.0, 0.5, 0.5), "scan 1 (site a)", flags={2: "possibly_merged"})
    sagittal, *axial = fig.axes
    assert sorted(t.get_text() for t in sagittal.texts) == ["L4/L5", "L5/S1"]
    assert "sagittal slice" in sagittal.get_title()
    # one axial view per disc, the superior one first, its flag in red in its title
    assert [a.get_title().split(",")[0] for a in axial] == ["L4/L5", "L5/S1"]
    assert "possibly_merged" in axial[0].get_title() and axial[0].title.get_color() == "#a00"
    assert "axial 41" in axial[0].get_title() and "axial 12" in axial[1].get_title()  # through each centre
    width, height = fig.get_size_inches() * 100
    assert width > 400 and height > 400  # shown larger than the 200 px overlays it replaces
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_scan_with_no_disc_still_gets_a_picture():
    image, labels = _phantom()
    fig = qc.qc_figure(image, np.zeros_like(labels), (1, 1, 1), "empty")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no disc"]


@pytest.mark.parametrize("level,name", [(1, "L5/S1"), (5, "L1/L2"), (6, "T12/L1"), (23, "C2/C3"), (25, "level 25")])
def test_disc_name(level, name):
    assert qc.disc_name(level) == name
