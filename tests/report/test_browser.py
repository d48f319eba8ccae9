"""report.html in a real headless browser (Chromium): every image loads and nothing overflows the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayspine.report.html import write_report

from tests.conftest import SHARED_DATA, require
from tests.report.conftest import layout_of, measured_output, screenshot


def _assert_fits(layout: dict, min_qc_width: int = 200) -> None:
    assert layout["images"], "no image on the page"
    assert [i["src"] for i in layout["images"] if not i["loaded"]] == []
    assert layout["scrollWidth"] <= layout["clientWidth"], layout
    assert layout["wide"] == []  # no element reaches past the viewport
    qc = [i for i in layout["images"] if i["src"].startswith("qc/")]
    assert qc and min(i["shown"] for i in qc) > min_qc_width


def test_the_check_sees_a_broken_image_and_a_page_too_wide(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><body><img src="qc/missing.png"><div style="width:3000px">wide</div></body></html>')
    layout = layout_of(chromium, page)
    assert layout["images"][0]["loaded"] is False
    assert layout["scrollWidth"] > layout["clientWidth"] and "div" in layout["wide"]


@pytest.mark.parametrize("width", [1280, 900])
def test_synthetic_report_loads_every_image_and_fits(chromium, synth_scored, width):
    layout = layout_of(chromium, synth_scored / "report.html", width)
    _assert_fits(layout)
    assert len([i for i in layout["images"] if i["src"].startswith("qc/")]) >= 6
    if width == 1280:  # for a person to look at (left in the test's temporary folder)
        screenshot(chromium, synth_scored / "report.html", synth_scored / "report-screenshot.png")


def test_report_of_real_masks_measured_loads_every_image_and_fits(chromium, tmp_path):
    masks = sorted(require(SHARED_DATA / "ribeirao_ivd_masks" / "masks").glob("subject_*.nii.gz"))[:4]
    out = measured_output(masks, tmp_path / "measured")
    page = write_report(out)
    text = page.read_text()
    assert "Every scored scan has 5 discs." in text and "L1/L2" in text
    assert "not judged (&lt; 20 discs)" in text  # four discs per level: too few to call one implausible
    layout = layout_of(chromium, page)
    _assert_fits(layout)
    assert len([i for i in layout["images"] if i["src"].startswith("qc/")]) == 2  # two per site
    screenshot(chromium, page, Path(out) / "report-screenshot.png")
