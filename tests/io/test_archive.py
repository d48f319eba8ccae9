"""Archive index and SPIDER metadata: the real gradings, plain folders, unusable scan ids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from tests.conftest import SPIDER_DIR, require
from rayspine.io.archive import index_archive, patient_of, read_overview
from rayspine.io.gradings import narrowing_labels, read_gradings
from rayspine.schema import LABEL_COLUMN, ScanStatus


@pytest.fixture(scope="module")
def real_gradings() -> pd.DataFrame:
    return read_gradings(require(SPIDER_DIR / "radiological_gradings.csv"))


def test_real_gradings_counts_and_columns(real_gradings):
    assert len(real_gradings) == 1520
    assert int(real_gradings[LABEL_COLUMN].sum()) == 544
    assert real_gradings["patient_id"].nunique() == 218
    # SPIDER spells it "Pfirrman grade"; the reader maps it to pfirrmann_grade.
    assert "pfirrmann_grade" in real_gradings and "Pfirrman grade" not in real_gradings
    assert set(real_gradings["pfirrmann_grade"]) == {1, 2, 3, 4, 5}
    assert real_gradings["patient_id"].map(type).eq(str).all()


def test_real_gradings_known_rows(real_gradings):
    patient_1 = real_gradings[real_gradings["patient_id"] == "1"].set_index("level")
    assert patient_1.loc[1, LABEL_COLUMN] == 1 and patient_1.loc[2, LABEL_COLUMN] == 0
    assert sorted(real_gradings.loc[real_gradings["level"] == 0, "patient_id"]) == ["107", "152"]


def test_narrowing_labels_drop_level_zero(real_gradings):
    labels = narrowing_labels(real_gradings)
    assert len(labels) == 1518
    assert list(labels.columns) == ["patient_id", "level", LABEL_COLUMN]
    assert labels["level"].min() == 1
    assert not labels.duplicated(["patient_id", "level"]).any()
    assert int(labels[LABEL_COLUMN].sum()) == 544  # the two level-0 rows are not narrowed
    rates = labels.groupby("level")[LABEL_COLUMN].mean()
    assert rates[1] == pytest.approx(0.578, abs=0.001) and rates[6] == pytest.approx(0.134, abs=0.001)


def test_real_overview():
    overview = read_overview(require(SPIDER_DIR / "overview.csv"))
    assert len(overview) == 447
    assert set(overview["sex"]) == {"F", "M"}  # trailing spaces stripped
    assert overview["new_file_name"].str.match(r"^\d+_t(1|2|2_SPACE)$").all()


def test_gradings_reader_refuses_other_csv(tmp_path):
    (tmp_path / "g.csv").write_text("Patient,IVD label,Disc narrowing\n1,1,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_gradings(tmp_path / "g.csv")
    (tmp_path / "o.csv").write_text("scan,site\na,b\n")
    with pytest.raises(ValueError, match="new_file_name"):
        read_overview(tmp_path / "o.csv")


def _scan(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)), str(path))
    return path


def test_plain_folder(tmp_path):
    for name in ("12_t1.mha", "scanB.nii.gz", "c.nrrd", "masks/12_t1.mha", ".hidden.mha"):
        _scan(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a scan")
    os.symlink(tmp_path / "gone.mha", tmp_path / "dangling.mha")  # kept, so that it is reported
    index = index_archive(tmp_path).set_index("scan_id")
    assert sorted(index.index) == ["12_t1", "c", "dangling", "scanB"]
    assert (index["status"] == ScanStatus.OK).all() and (index["site"] == "unknown").all()
    assert index.loc["12_t1", "patient_id"] == "12" and index.loc["scanB", "patient_id"] == "scanB"
    assert index.loc["12_t1", "mask_path"] == str(tmp_path / "masks" / "12_t1.mha")
    assert pd.isna(index.loc["c", "mask_path"])
    assert index.loc["scanB", "image_path"] == str(tmp_path / "scanB.nii.gz")
    for name in ("..mha", "...mha"):  # ids "." and "..": reported as bad ids, not dropped as hidden files
        _scan(tmp_path / name)
    index = index_archive(tmp_path).set_index("scan_id")
    assert index.loc[[".", ".."], "status"].tolist() == ["bad_id", "bad_id"] and len(index) == 6


def test_bad_ids_are_reported_not_dropped(tmp_path):
    for name in ("a.mha", "a.nii.gz", "x..y.mha", "with space.mha", "-dash.mha", "fine_1.mha"):
        _scan(tmp_path / name)
    index = index_archive(tmp_path)
    status = dict(zip(index["image_path"].map(lambda p: Path(p).name), index["status"]))
    assert status["a.mha"] == status["a.nii.gz"] == ScanStatus.BAD_ID
    assert status["x..y.mha"] == status["with space.mha"] == status["-dash.mha"] == ScanStatus.BAD_ID
    assert status["fine_1.mha"] == ScanStatus.OK
    messages = index.set_index(index["image_path"].map(lambda p: Path(p).name))["message"]
    assert "shared by several files" in messages["a.mha"]
    assert "not a safe storage key" in messages["x..y.mha"]
    assert len(index) == 6


def test_spider_layout_and_masks_only(tmp_path):
    for name in ("images/3_t1.mha", "images/3_t2.mha", "masks/3_t1.mha", "masks/3_t2.mha", "masks/4_t1.mha"):
        _scan(tmp_path / name)
    pd.DataFrame({"new_file_name": ["3_t1", "3_t2"], "sex": ["F ", "F "], "site": ["north", "south"]}).to_csv(
        tmp_path / "overview.csv", index=False
    )
    index = index_archive(tmp_path)
    assert list(index["scan_id"]) == ["3_t1", "3_t2"] and list(index["patient_id"]) == ["3", "3"]
    assert list(index["site"]) == ["north", "south"]
    assert list(index["mask_path"]) == [str(tmp_path / "masks" / f"3_t{i}.mha") for i in (1, 2)]
    masks = index_archive(tmp_path, use="masks")
    assert list(masks["scan_id"]) == ["3_t1", "3_t2", "4_t1"]
    assert masks["image_path"].isna().all() and masks.loc[2, "site"] == "unknown"


def test_missing_archive_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        index_archive(tmp_path / "nope")


def test_patient_of():
    assert patient_of("12_t1") == "12" and patient_of("007_t2_SPACE") == "007" and patient_of("case") == "case"
