"""report.html on a scored output: warnings, flags, geometry by level, QC pictures drawn once, and
extra sections that survive a re-write."""

from __future__ import annotations

import shutil

import pandas as pd

from rayspine.report import html as report_html
from rayspine.report.html import write_report


def test_a_scan_with_a_missing_disc_is_warned_about_and_linked_to_its_picture(synth_scored):
    page = (synth_scored / "report.html").read_text()
    assert "1 scan with more or fewer discs than the usual 4" in page
    row = page[page.index("with more or fewer discs than the archive"):].split("</tr>")[1]  # the table's first row
    assert 'href="qc/7_t1.png">7_t1</a>' in row and "<td class=\"\">3</td><td class=\"\">4</td>" in row
    assert "L2/L3, L4/L5, L5/S1" in row  # the levels it has: L3/L4 is the one missing
    assert (synth_scored / "qc" / "7_t1.png").is_file()


def test_an_implausible_measurement_is_flagged_with_its_level(synth_scored):
    flags = pd.read_csv(synth_scored / "qc" / "flags.csv")
    odd = flags[(flags.scan_id == "2_t1") & (flags.level == 1)].iloc[0]
    assert odd.level_name == "L5/S1" and odd.plausibility.startswith("sagittal_angle_deg 85 (z +")
    assert "sagittal_angle_deg 85 (z +" in (synth_scored / "report.html").read_text()
    assert (synth_scored / "qc" / "2_t1.png").is_file()
    # The synthetic discs themselves are plausible: 85 degrees is the only sagittal angle flagged.
    assert flags.plausibility.fillna("").str.contains("sagittal").sum() == 1


def test_geometry_is_shown_by_level_and_by_site(synth_scored):
    page = (synth_scored / "report.html").read_text()
    assert "Disc geometry by level" in page and "Disc geometry by site" in page
    by_level = page[page.index("Medians by level"):page.index("Disc geometry by site")]
    names = [n for n in ("L5/S1", "L4/L5", "L3/L4", "L2/L3") if n in by_level]
    assert names == ["L5/S1", "L4/L5", "L3/L4", "L2/L3"]
    assert by_level.index("L5/S1") < by_level.index("L2/L3")  # from the bottom, as levels count
    assert "sagittal angle (deg)" in by_level  # headers with units, short enough to wrap


def test_qc_pictures_are_a_sample_drawn_once(synth_scored, tmp_path, monkeypatch):
    pictures = sorted(p.name for p in (synth_scored / "qc").glob("*.png"))
    suspicious = set(pd.read_csv(synth_scored / "qc" / "flags.csv").scan_id) | {"7_t1"}
    assert {f"{s}.png" for s in suspicious} <= set(pictures)
    assert len(pictures) <= len(suspicious) + 3 * 2 < 22  # the suspicious scans and two per site, not every scan
    out = tmp_path / "out"
    shutil.copytree(synth_scored, out)

    def no_reading(*args):
        raise AssertionError("a scan was read again")

    monkeypatch.setattr(report_html, "_scan_and_labels", no_reading)
    page = write_report(out).read_text()
    assert all(f'src="qc/{name}"' in page for name in pictures)


def test_extra_sections_survive_a_rewrite_that_names_none(synth_scored, tmp_path):
    # A resumed `run` that scores nothing new re-writes the report without the demo's sections.
    out = tmp_path / "scored"
    shutil.copytree(synth_scored, out)
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv.md").write_text("| features | AUC |\n| geometric | 0.81 |\n")
    write_report(out, extras={"Disc narrowing": cv})
    page = write_report(out).read_text()
    assert "<h2>Disc narrowing</h2>" in page and "geometric | 0.81" in page
    # remembered relative to the output, so the demo folder can move
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(out, moved / "scored")
    shutil.move(cv, moved / "cv")
    assert "geometric | 0.81" in write_report(moved / "scored").read_text()
    shutil.rmtree(moved / "cv")
    assert "is gone" in write_report(moved / "scored").read_text()


def test_a_run_that_resumes_and_scores_nothing_new_keeps_the_extra_sections(synth_archive, synth_scored, tmp_path):
    # The demo's case: `run` into scored/ (report=False), the report with the CV and interpretation
    # sections, then a second `run` with the same settings: every scan is done, so it only rewrites
    # the tables and the report (no Ray needed for that).
    from rayspine.pipeline.graph import run_pipeline

    from tests import oracle
    from tests.report.conftest import CFG

    out = tmp_path / "scored"
    shutil.copytree(synth_scored, out)
    (tmp_path / "interpret").mkdir()
    (tmp_path / "interpret" / "correlation.md").write_text("z0 ~ height_mm r=0.9")
    write_report(out, extras={"What the latent features encode": tmp_path / "interpret"})
    summary = run_pipeline(synth_archive, out, seg_dir=synth_archive, cfg=CFG, segment_stage=oracle.OracleSegmentScans)
    assert "22 scans" in summary
    page = (out / "report.html").read_text()
    assert "What the latent features encode" in page and "z0 ~ height_mm r=0.9" in page


def test_qc_pictures_drawn_as_ray_tasks_are_those_drawn_here(synth_scored, tmp_path, ray_local, monkeypatch, caplog):
    # After a run the report draws its pictures on the run's Ray, two at a time on 2 CPUs: the same
    # pictures, and a scan that cannot be read costs its picture alone, as when they are drawn here.
    import matplotlib.image

    import rayspine.runtime

    scans = pd.read_parquet(synth_scored / "scans.parquet")
    discs = pd.read_parquet(synth_scored / "discs.parquet")
    chosen = ["2_t1", "7_t1", "3_t1"]
    scans.loc[scans.scan_id == "3_t1", "path"] = str(tmp_path / "gone.nii.gz")
    tasks = []
    real_map = rayspine.runtime.ray_map

    def recording_map(fn, calls, **kwargs):
        tasks.append(len(calls))
        return real_map(fn, calls, **kwargs)

    monkeypatch.setattr(rayspine.runtime, "ray_map", recording_map)
    assert rayspine.runtime.free_cpus_on_one_node(wait_s=10.0) >= 2  # the earlier tests' tasks and actors have given theirs back
    links = {}
    for mode in ("ray", "here"):
        out = tmp_path / mode
        shutil.copytree(synth_scored, out)
        shutil.rmtree(out / "qc")
        if mode == "here":
            monkeypatch.setattr(ray_local, "is_initialized", lambda: False)
        with caplog.at_level("WARNING", logger="rayspine.report.html"):
            caplog.clear()
            links[mode] = report_html.write_qc_pictures(out, scans, discs, chosen)
            assert "no QC picture for 3_t1" in caplog.text
    assert tasks == [3]  # the Ray run drew all three as tasks; the other drew them here
    assert links["ray"] == links["here"] == {"2_t1": "qc/2_t1.png", "7_t1": "qc/7_t1.png"}
    for name in ("2_t1.png", "7_t1.png"):
        assert (matplotlib.image.imread(tmp_path / "ray" / "qc" / name) == matplotlib.image.imread(tmp_path / "here" / "qc" / name)).all()
