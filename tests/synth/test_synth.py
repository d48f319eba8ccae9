"""The demo archive: SPIDER layout, multi-site acquisition, exact ground truth, determinism."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from rayspine.cli import app
from rayspine.io.archive import index_archive
from rayspine.io.gradings import read_gradings
from rayspine.io.scans import read_scan
from rayspine.preprocess import to_canonical_orientation
from rayspine.synth import synthesize_archive, synthesize_patient
from rayspine.measure.geometry import disc_rotation as rotation
from rayspine.synth.anatomy import draw_narrowing
from rayspine.synth.imaging import draw_sites
from rayspine.synth.spider_stats import (
    GRADINGS_HEADER,
    NARROWING_RATE,
    OVERVIEW_COLUMNS,
    t1_acquisitions,
)
from tests.conftest import SPIDER_DIR, require

SPIDER_GRADINGS_HEADER = (
    "Patient,IVD label,Modic,UP endplate,LOW endplate,Spondylolisthesis,Disc herniation,"
    "Disc narrowing,Disc bulging,Pfirrman grade"
)
N = 12


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "archive"
    args = ["synth", str(out), "--patients", str(N), "--sites", "3", "--seed", "1", "--size", "small"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def truth(archive) -> pd.DataFrame:
    return pd.read_parquet(archive / "truth.parquet")


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _physical_points(mask, label: int) -> np.ndarray:
    index = np.argwhere(mask.voxels == label).astype(float)
    direction = np.asarray(mask.direction).reshape(3, 3)
    return (index * np.asarray(mask.spacing)) @ direction.T + np.asarray(mask.origin)


def test_image_mask_pairs_readable_on_one_grid(archive):
    images = sorted((archive / "images").glob("*.mha"))
    masks = sorted((archive / "masks").glob("*.mha"))
    assert sorted(p.name for p in images) == sorted(f"{i}_t1.mha" for i in range(1, N + 1))
    assert [p.name for p in masks] == [p.name for p in images]
    for image_path, mask_path in zip(images, masks):
        image, mask = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(mask_path))
        assert image.GetDimension() == 3 and image.GetSize() == mask.GetSize()
        assert np.allclose(image.GetSpacing(), mask.GetSpacing())
        assert np.allclose(image.GetOrigin(), mask.GetOrigin())
        assert np.allclose(image.GetDirection(), mask.GetDirection())
        assert np.prod(image.GetSize()) < 200_000  # --size small


def test_three_sites_three_spacings_thick_left_right_slices(archive):
    spacings, directions = set(), set()
    for path in sorted((archive / "images").glob("*.mha")):
        image = sitk.ReadImage(str(path))
        spacing = np.asarray(image.GetSpacing())
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        spacings.add(tuple(np.round(spacing, 4)))
        directions.add(tuple(direction.round(6).ravel()))
        # The array axis that runs left-right (physical x) is the thick one: 3-4 mm sagittal slices.
        lr_axis = int(np.argmax(np.abs(direction[0])))
        assert 3.0 <= spacing[lr_axis] <= 4.0
        assert np.all(np.delete(spacing, lr_axis) < spacing[lr_axis])
    assert len(spacings) == 3
    assert len(directions) >= 2  # at least one site stores the volume in another axis order


def test_stored_orientation_reorients_to_canonical(archive):
    """A non-LPS site's scan turned to LPS has identity direction and its slices along axis 0."""
    for path in sorted((archive / "images").glob("*.mha")):
        scan = read_scan(path)
        if np.allclose(scan.direction, np.eye(3).ravel()):
            continue
        canonical = to_canonical_orientation(scan)
        assert np.allclose(canonical.direction, np.eye(3).ravel())
        assert canonical.spacing[0] == max(canonical.spacing)
        return
    pytest.fail("no site stores its scans in a non-LPS orientation")


def test_labels_follow_spider(archive, truth):
    for path in sorted((archive / "masks").glob("*.mha")):
        labels = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())
        discs = sorted(v for v in labels if v > 200)
        vertebrae = sorted(v for v in labels if 0 < v < 100)
        assert discs == list(range(201, 201 + len(discs))) and len(discs) >= 3
        assert vertebrae[0] == 1 and vertebrae == list(range(1, len(vertebrae) + 1))
        assert 100 in labels
        scan_truth = truth[truth["scan_id"] == path.name[: -len(".mha")]]
        assert sorted(scan_truth["level"] + 200) == discs  # one truth row per disc label present


def test_metadata_files_have_spider_columns(archive, truth):
    assert (archive / "radiological_gradings.csv").read_text().splitlines()[0] == SPIDER_GRADINGS_HEADER
    assert ",".join(GRADINGS_HEADER) == SPIDER_GRADINGS_HEADER
    overview = pd.read_csv(archive / "overview.csv")
    assert list(overview.columns) == [*OVERVIEW_COLUMNS, "site"]
    counts = truth.groupby("scan_id").size()
    assert (overview.set_index("new_file_name")["num_discs"] == counts.reindex(overview["new_file_name"]).values).all()
    assert overview["site"].nunique() == 3
    assert set(overview["MagneticFieldStrength"]) <= {1.5, 3.0}
    gradings = read_gradings(archive / "radiological_gradings.csv")
    assert len(gradings) == len(truth)
    merged = truth.assign(patient_id=truth["patient_id"].astype(str)).merge(gradings, on=["patient_id", "level"])
    assert (merged["disc_narrowing_x"] == merged["disc_narrowing_y"]).all()
    assert merged["pfirrmann_grade"].between(1, 5).all()


def test_overview_columns_are_the_real_ones():
    real = pd.read_csv(require(SPIDER_DIR / "overview.csv"), nrows=1)
    assert list(real.columns) == OVERVIEW_COLUMNS


def test_borrowed_statistics_match_real_spider():
    real_gradings = pd.read_csv(require(SPIDER_DIR / "radiological_gradings.csv"))
    rates = real_gradings.groupby("IVD label")["Disc narrowing"].mean()
    for level, rate in NARROWING_RATE.items():
        assert rate == pytest.approx(rates[level], abs=1e-5)
    real = pd.read_csv(SPIDER_DIR / "overview.csv", dtype=str, keep_default_na=False).set_index("new_file_name")
    for _, row in t1_acquisitions().iterrows():  # every embedded acquisition is a real row, verbatim
        source = real.loc[row["source_series"]]
        for column in row.index.drop(["source_series", "pixel_mm", "slice_mm"]):
            assert source[column] == row[column], (row["source_series"], column)


def test_real_acquisition_ranges():
    table = t1_acquisitions()
    assert table["pixel_mm"].between(0.3, 1.1).all() and table["slice_mm"].between(3.0, 4.0).all()
    assert set(table["MagneticFieldStrength"].astype(float)) == {1.5, 3.0}
    assert {m.split()[0].upper() for m in table["Manufacturer"]} == {"PHILIPS", "SIEMENS"}


def test_narrowing_drawn_at_spider_rates():
    rng = np.random.default_rng(0)
    draws = np.array([draw_narrowing(rng, 6) for _ in range(4000)])
    expected = np.array([NARROWING_RATE[level] for level in range(1, 7)])
    assert np.allclose(draws.mean(axis=0), expected, atol=0.03)


def test_narrowed_discs_thinner_but_classes_overlap(tmp_path):
    # A larger draw than the fixture so the comparison is not luck; small volumes keep it cheap.
    rows = [synthesize_patient(3, p, draw_sites(3, 1, "small")[0], "small").truth for p in range(1, 41)]
    truth = pd.DataFrame([r for patient in rows for r in patient])
    by_class = truth.groupby("disc_narrowing")["height_mm"]
    assert by_class.mean()[1] < 0.9 * by_class.mean()[0]
    assert by_class.max()[1] > by_class.min()[0]  # learnable, not a threshold
    assert truth["height_mm"].between(4.5, 13.5).all()
    assert truth["ap_width_mm"].between(26, 46).all() and truth["lateral_width_mm"].between(35, 62).all()


def test_mask_volume_matches_truth(archive, truth):
    ratios = []
    for scan_id, discs in truth.groupby("scan_id"):
        mask = read_scan(archive / "masks" / f"{scan_id}.mha", check_voxels=False)
        voxel_mm3 = float(np.prod(mask.spacing))
        for disc in discs.itertuples():
            ratios.append((mask.voxels == 200 + disc.level).sum() * voxel_mm3 / disc.volume_mm3)
    ratios = np.asarray(ratios)
    assert abs(ratios.mean() - 1) < 0.02
    assert np.all(np.abs(ratios - 1) < 0.10)


def test_truth_angles_match_principal_axes_of_the_mask(archive, truth):
    """Decompose each disc's PCA frame as R = Rx(s) Rz(t) Ry(c): the truth angles come back."""
    errors = []
    for scan_id, discs in truth.groupby("scan_id"):
        mask = read_scan(archive / "masks" / f"{scan_id}.mha", check_voxels=False)
        for disc in discs.itertuples():
            _, vectors = np.linalg.eigh(np.cov(_physical_points(mask, 200 + disc.level).T))
            normal, lateral = vectors[:, 0] * np.sign(vectors[2, 0]), vectors[:, 2] * np.sign(vectors[0, 2])
            r = np.column_stack([lateral, np.cross(normal, lateral), normal])
            measured = np.degrees(
                [np.arctan2(r[2, 1], r[1, 1]), np.arcsin(-r[0, 1]), np.arctan2(r[0, 2], r[0, 0])]
            )
            errors.append(measured - [disc.sagittal_angle_deg, disc.transverse_angle_deg, disc.coronal_angle_deg])
    errors = np.abs(np.asarray(errors))
    # Mean within 1 degree; single thin discs on 3 mm slices of the small volumes stray further, most in
    # the transverse angle of a near-round disc (5.3 degrees seen), so the worst case gets 6.
    assert np.all(errors.mean(axis=0) < 1.0) and np.all(errors.max(axis=0) < 6.0)
    assert truth["sagittal_angle_deg"].max() - truth["sagittal_angle_deg"].min() > 20  # a lordosis


def test_rotation_convention():
    """+t about the left-right axis tilts the disc normal anteriorly (-y in LPS), right-hand rule."""
    normal = rotation(30, 0, 0)[:, 2]
    assert np.allclose(normal, [0, -np.sin(np.radians(30)), np.cos(np.radians(30))])
    assert np.allclose(rotation(0, 90, 0)[:, 0], [0, 1, 0])  # transverse: lateral axis x -> y
    assert np.allclose(rotation(0, 0, 90)[:, 2], [1, 0, 0])  # coronal: normal z -> x


def test_same_seed_byte_identical_other_seed_different(archive, tmp_path):
    again = tmp_path / "again"
    synthesize_archive(again, patients=N, sites=3, seed=1, size="small")
    assert _files(again) == _files(archive)
    for rel in _files(archive):
        assert filecmp.cmp(archive / rel, again / rel, shallow=False), rel
    other = tmp_path / "other"
    synthesize_archive(other, patients=2, sites=3, seed=2, size="small")
    assert (other / "images" / "1_t1.mha").read_bytes() != (archive / "images" / "1_t1.mha").read_bytes()
    assert (other / "masks" / "2_t1.mha").read_bytes() != (archive / "masks" / "2_t1.mha").read_bytes()


def test_patients_do_not_depend_on_the_patient_count(archive, tmp_path):
    fewer = tmp_path / "fewer"
    synthesize_archive(fewer, patients=2, sites=3, seed=1, size="small")
    for rel in ("images/1_t1.mha", "images/2_t1.mha", "masks/2_t1.mha"):
        assert filecmp.cmp(fewer / rel, archive / rel, shallow=False), rel


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize_archive(out, patients=1, sites=1, size="small")
    truth = synthesize_archive(out, patients=1, sites=1, size="small", overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"  # overwrite replaces only what synth writes
    assert set(truth["scan_id"]) == {"1_t1"}
    with pytest.raises(ValueError, match="size"):
        synthesize_archive(tmp_path / "x", size="huge")


def test_index_archive_reads_the_demo_archive(archive, truth):
    index = index_archive(archive)
    assert len(index) == N and (index["status"] == "ok").all()
    assert sorted(index["scan_id"]) == sorted(truth["scan_id"].unique())
    assert (index["patient_id"] == index["scan_id"].str.split("_").str[0]).all()
    sites = truth.drop_duplicates("scan_id").set_index("scan_id")["site"]
    assert (index.set_index("scan_id")["site"] == sites.reindex(index["scan_id"]).values).all()
    for row in index.itertuples():
        assert Path(row.mask_path) == archive / "masks" / f"{row.scan_id}.mha"
        assert Path(row.image_path) == archive / "images" / f"{row.scan_id}.mha"
