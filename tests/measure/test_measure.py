"""measure_mask (pure) and run_measure (archive -> tables and crops on Ray, resumable)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.phantoms import spine_phantom
from rayspine.config import Config
from rayspine.io.scans import write_scan
from rayspine.io.store import completed_parts, part_path, read_crops_zarr
from rayspine.measure.geometry import measure_disc
from rayspine.measure.command import run_measure
from rayspine.measure.scan import measure_mask
from rayspine.schema import geometry_columns, DiscStatus, ScanStatus
from rayspine.volume import Volume

CFG = Config()
SPACING = (1.0, 1.0, 1.0)
RUN_DEPENDENT = ["seconds_load", "seconds_segment", "seconds_measure", "seconds_encode", "node_id"]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return spine_phantom()


def _geometry(measured) -> pd.DataFrame:
    return pd.DataFrame(measured.rows).set_index("level")[geometry_columns()]


def test_measure_mask_rows_crops_and_levels(labels):
    measured = measure_mask(Volume(labels, SPACING), CFG)
    assert measured.status == ScanStatus.OK and measured.message == ""
    assert [r["level"] for r in measured.rows] == [1, 2, 3, 4, 5] == measured.levels
    assert measured.crops.shape == (5, 64, 64, 64) and measured.crops.dtype == np.uint8
    for row in measured.rows:
        assert row["status"] == DiscStatus.OK
        assert measured.levels[row["crop_index"]] == row["level"]
        assert row["volume_mm3"] == (labels == 200 + row["level"]).sum()
    # the phantom's lordosis: +10, +5, 0, -5, -10 degrees from the bottom
    np.testing.assert_allclose(_geometry(measured)["sagittal_angle_deg"], [10, 5, 0, -5, -10], atol=1)
    np.testing.assert_array_equal(measured.labels, np.where(labels > 200, labels, 0))


def test_measure_mask_reorients_to_lps_without_changing_the_answer(labels):
    """The same spine stored right->left flipped and with axes permuted (direction not identity)."""
    reference = _geometry(measure_mask(Volume(labels, SPACING), CFG))
    # stored voxel order [y, x, z], x running left->right: direction columns are the axes' LPS directions
    stored = np.ascontiguousarray(labels[::-1].transpose(1, 0, 2))
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    origin = (float(labels.shape[0] - 1), 0.0, 0.0)
    measured = measure_mask(Volume(stored, SPACING, origin, direction), CFG)
    pd.testing.assert_frame_equal(_geometry(measured), reference, atol=1e-9)
    # the labels come back on the input's own grid
    np.testing.assert_array_equal(measured.labels, np.where(stored > 200, stored, 0))


def test_measure_mask_binary_prediction_gets_spider_labels(labels):
    measured = measure_mask(Volume((labels > 200).astype(np.uint8), SPACING), CFG, binary=True)
    assert measured.levels == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(measured.labels, np.where(labels > 200, labels, 0))


def test_measure_mask_no_discs_and_bad_voxels():
    assert measure_mask(Volume(np.zeros((10, 10, 10), np.uint8), SPACING), CFG).status == ScanStatus.NO_DISCS
    only_vertebrae = measure_mask(Volume(np.full((10, 10, 10), 3, np.uint8), SPACING), CFG)
    assert only_vertebrae.status == ScanStatus.NO_DISCS and only_vertebrae.crops.shape == (0, 64, 64, 64)
    nan = np.zeros((10, 10, 10), np.float32)
    nan[0, 0, 0] = np.nan
    assert measure_mask(Volume(nan, SPACING), CFG).status == ScanStatus.BAD_VOXELS


def test_measure_mask_reports_a_disc_too_large_to_crop(labels):
    cfg = CFG.replace(discs={"crop_size": 30})  # 30 x 1.4 = 42 mm < the discs' 44 mm
    measured = measure_mask(Volume(labels, SPACING), cfg)
    assert all(r["status"] == DiscStatus.TOO_LARGE and r["crop_index"] == -1 for r in measured.rows)
    assert all("crop" in r["message"] for r in measured.rows)
    assert all(not math.isnan(r["height_mm"]) for r in measured.rows)  # still measured
    assert measured.crops.shape == (0, 30, 30, 30) and measured.status == ScanStatus.OK


# --- run_measure ----------------------------------------------------------------------------------
def _archive(root: Path, labels: np.ndarray) -> Path:
    """A SPIDER-layout archive: 3 good masks, a broken file, an empty mask, a binary mask, gradings."""
    masks = root / "masks"
    write_scan(Volume(labels, SPACING), masks / "1_t2.mha")
    write_scan(Volume(labels[:, :, :110], SPACING), masks / "2_t1.mha")  # discs 1..4 only
    fragment = labels.copy()
    fragment[2:8, 2:8, 2:8] = 203  # 216 mm3 stray piece of disc 3
    write_scan(Volume(fragment, (1.0, 1.0, 1.0)), masks / "3_t2.mha")
    write_scan(Volume(np.zeros((16, 16, 16), np.uint8), SPACING), masks / "4_t2.mha")
    (masks / "5_t2.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 9 9 9\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n\x00\x01")
    write_scan(Volume((labels > 200).astype(np.uint8), SPACING), masks / "6_t2.mha")
    gradings = pd.DataFrame(
        [{"Patient": p, "IVD label": lvl, "Disc narrowing": (p + lvl) % 2} for p in (1, 2, 3, 6) for lvl in range(1, 6)]
    )
    for col in ("Modic", "UP endplate", "LOW endplate", "Spondylolisthesis", "Disc herniation", "Disc bulging", "Pfirrman grade"):
        gradings[col] = 0
    gradings.to_csv(root / "radiological_gradings.csv", index=False)
    return root


def _stable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in RUN_DEPENDENT if c in df]).sort_values(["scan_id"] + (["level"] if "level" in df else [])).reset_index(drop=True)


@pytest.fixture(scope="module")
def measured_archive(tmp_path_factory, labels, ray_local):
    root = _archive(tmp_path_factory.mktemp("archive"), labels)
    out = tmp_path_factory.mktemp("runs") / "out"
    discs = run_measure(root, out, CFG)
    return root, out, discs


def test_run_measure_statuses_and_rows(measured_archive):
    _, out, discs = measured_archive
    scans = pd.read_parquet(out / "scans.parquet").set_index("scan_id")
    assert scans.loc["1_t2", "status"] == ScanStatus.OK and scans.loc["1_t2", "n_discs"] == 5
    assert scans.loc["2_t1", "n_discs"] == 4
    assert scans.loc["4_t2", "status"] == ScanStatus.NO_DISCS
    assert scans.loc["5_t2", "status"] == ScanStatus.UNREADABLE and scans.loc["5_t2", "message"]
    assert scans.loc["6_t2", "status"] == ScanStatus.OK and scans.loc["6_t2", "n_discs"] == 5
    assert "fragments_dropped" in scans.loc["3_t2", "message"]
    assert len(scans) == 6
    per_scan = discs.groupby("scan_id").size().to_dict()
    assert per_scan == {"1_t2": 5, "2_t1": 4, "3_t2": 5, "6_t2": 5}
    assert discs.set_index(["scan_id", "level"]).loc[("3_t2", 3), "status"] == DiscStatus.FRAGMENTS_DROPPED
    # binary mask and label mask of the same spine give the same geometry
    a = discs[discs.scan_id == "1_t2"].set_index("level")[geometry_columns()]
    b = discs[discs.scan_id == "6_t2"].set_index("level")[geometry_columns()]
    pd.testing.assert_frame_equal(a, b)


def test_run_measure_joins_the_gradings(measured_archive):
    _, _, discs = measured_archive
    for row in discs.itertuples():
        assert row.disc_narrowing == (int(row.patient_id) + row.level) % 2


def test_run_measure_crops_are_tied_to_rows(measured_archive):
    _, out, discs = measured_archive
    for scan_id, rows in discs.groupby("scan_id"):
        crops, levels = read_crops_zarr(out / "crops.zarr", scan_id)
        assert crops.shape == (len(rows), 64, 64, 64)
        for row in rows.itertuples():
            assert levels[row.crop_index] == row.level
            # the crop holds this disc: the levels' tilts differ (+10 .. -10 degrees), the crop's matches
            crop_geometry = measure_disc(crops[row.crop_index], CFG.grid.spacing_mm)
            assert crop_geometry["sagittal_angle_deg"] == pytest.approx(row.sagittal_angle_deg, abs=2)
            assert crop_geometry["volume_mm3"] == pytest.approx(row.volume_mm3, rel=0.15)


def test_run_measure_rerun_adds_nothing_and_resumes_interrupted_runs(measured_archive, tmp_path):
    root, out, discs = measured_archive
    scans = pd.read_parquet(out / "scans.parquet")
    again = run_measure(root, out, CFG)
    pd.testing.assert_frame_equal(_stable(again), _stable(discs))
    # simulate a crash: one scan's parts gone (it was mid-write), a temporary crops folder left behind
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    part = next(p for p in completed_parts(copy, "scans") if "2_t1" in pd.read_parquet(p).scan_id.tolist())
    part.unlink()
    part_path(copy, "discs", part.stem).unlink()
    (copy / "crops.zarr" / ".2_t1.tmp-deadbeef").mkdir()
    (copy / "discs.parquet").unlink()
    resumed = run_measure(root, copy, CFG)
    pd.testing.assert_frame_equal(_stable(resumed), _stable(discs))
    pd.testing.assert_frame_equal(_stable(pd.read_parquet(copy / "scans.parquet")), _stable(scans))
    crops, levels = read_crops_zarr(copy / "crops.zarr", "2_t1")
    assert levels == [1, 2, 3, 4]


def test_run_measure_refuses_foreign_folder_and_overwrites_on_request(measured_archive, tmp_path):
    root, _, discs = measured_archive
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        run_measure(root, foreign, CFG)
    fresh = run_measure(root, foreign, CFG, overwrite=True)
    pd.testing.assert_frame_equal(_stable(fresh), _stable(discs))
    assert (foreign / "notes.txt").read_text() == "mine"  # overwrite never touches what is not ours
    with pytest.raises(FileExistsError):  # a different config would mix results
        run_measure(root, foreign, CFG.replace(discs={"min_fragment_mm3": 10.0}))


def test_run_measure_folder_of_masks_with_bad_input(tmp_path, labels, ray_local):
    """Every bad file gets its own status; the good scan is complete; nothing is written outside OUT."""
    import SimpleITK as sitk

    folder = tmp_path / "masks"
    write_scan(Volume(labels, SPACING), folder / "a.mha")
    write_scan(Volume(labels, SPACING), folder / "dup.mha")
    write_scan(Volume(labels, SPACING), folder / "dup.nii.gz")  # two files, one id: both reported
    write_scan(Volume(labels, SPACING), folder / "x..y.mha")  # '..' in the id
    (folder / "empty.mha").write_bytes(b"")
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkUInt8), str(folder / "flat.mha"))  # 2-D
    nan = np.zeros((8, 8, 8), np.float32)
    nan[1, 1, 1] = np.nan
    write_scan(Volume(nan, SPACING), folder / "nan.mha")
    (folder / "loop.mha").symlink_to(folder / "loop.mha")
    out = tmp_path / "out"
    discs = run_measure(folder, out, CFG)
    scans = pd.read_parquet(out / "scans.parquet")
    status = dict(zip(scans["scan_id"] + "/" + scans["path"].fillna("").str.rsplit("/", n=1).str[-1], scans["status"]))
    assert status == {
        "a/a.mha": ScanStatus.OK,
        "dup/dup.mha": ScanStatus.BAD_ID,
        "dup/dup.nii.gz": ScanStatus.BAD_ID,
        "x..y/x..y.mha": ScanStatus.BAD_ID,
        "empty/empty.mha": ScanStatus.UNREADABLE,
        "flat/flat.mha": ScanStatus.BAD_HEADER,
        "nan/nan.mha": ScanStatus.BAD_VOXELS,
        "loop/loop.mha": ScanStatus.UNREADABLE,
    }
    assert (scans["message"].str.len() > 0).sum() == len(scans) - 1
    assert set(discs["scan_id"]) == {"a"} and len(discs) == 5 and discs["disc_narrowing"].isna().all()
    written = {p.name for p in (out / "parts" / "scans").iterdir()}
    assert "a.parquet" in written and len(written) == len(scans)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks", "out"]  # nothing beside OUT
    assert {p.name for p in (out / "crops.zarr").iterdir()} == {"a"}
