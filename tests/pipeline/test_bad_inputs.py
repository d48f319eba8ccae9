"""A corpus of broken inputs among good scans, through `run` and `measure`: each broken file gets its
own status and message, the good scans are complete, nothing is duplicated, nothing lands outside OUT."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from rayspine.config import Config
from rayspine.measure.command import run_measure
from rayspine.pipeline.graph import run_pipeline
from rayspine.synth import synthesize_archive

from tests import oracle

GOOD = ["1_t1", "2_t1", "3_t1"]
HEADER = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\nElementSpacing = 1 1 1\n"


def write_corpus(folder: Path) -> dict[str, set[str]]:
    """Broken scans in ``folder``; returns file name -> the statuses that are right for it."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, set[str]] = {}

    def put(name: str, content: bytes, statuses: set[str]) -> None:
        (folder / name).write_bytes(content)
        expected[name] = statuses

    put("10_zero.mha", b"", {"unreadable"})
    put("11_trunc.mha", (HEADER + "ElementDataFile = LOCAL\n").encode() + b"\x01" * 10, {"unreadable"})
    put("12_garbage.nii.gz", os.urandom(300), {"unreadable"})
    put("13_skew.mha", (HEADER + "TransformMatrix = 1 0.5 0 0 1 0 0 0 1\nElementDataFile = LOCAL\n").encode() + bytes(range(64)), {"bad_header"})
    put("14_zero_spacing.mha", (HEADER.replace("1 1 1", "0 1 1") + "ElementDataFile = LOCAL\n").encode() + bytes(range(64)), {"bad_header"})
    put("15_huge.mha", HEADER.replace("4 4 4", "100000 100000 100000").encode() + b"ElementDataFile = LOCAL\n", {"bad_header"})
    put("16_escape.mhd", (HEADER + "ElementDataFile = ../../outside.raw\n").encode(), {"unreadable"})
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(20, dtype=np.uint8).reshape(4, 5)), str(folder / "17_flat.mha"))
    expected["17_flat.mha"] = {"bad_header"}
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), np.nan, np.float32)), str(folder / "18_nan.mha"))
    expected["18_nan.mha"] = {"bad_voxels"}
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), 7, np.uint8)), str(folder / "19_const.mha"))
    expected["19_const.mha"] = {"bad_voxels", "no_discs"}  # a constant mask is a mask with no disc
    os.symlink(folder / "20_loop.mha", folder / "20_loop.mha")
    expected["20_loop.mha"] = {"unreadable"}
    for name in ("21_dup.mha", "21_dup.nii.gz"):
        shutil.copy(folder / "18_nan.mha", folder / name) if name.endswith("mha") else sitk.WriteImage(sitk.ReadImage(str(folder / "18_nan.mha")), str(folder / name))
        expected[name] = {"bad_id"}
    shutil.copy(folder / "18_nan.mha", folder / "22..sneaky.mha")
    expected["22..sneaky.mha"] = {"bad_id"}
    for name in ("..mha", "...mha"):  # ids "." and "..": once no row at all
        shutil.copy(folder / "18_nan.mha", folder / name)
        expected[name] = {"bad_id"}
    return expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    archive = root / "archive"
    synthesize_archive(archive, patients=3, sites=2, seed=4, size="small", overwrite=True)
    images, masks = root / "images", root / "masks-only"
    images.mkdir()
    masks.mkdir()
    for scan_id in GOOD:
        shutil.copy(archive / "images" / f"{scan_id}.mha", images / f"{scan_id}.mha")
        shutil.copy(archive / "masks" / f"{scan_id}.mha", masks / f"{scan_id}.mha")
    (images / "masks").mkdir()  # the oracle's ground truth, beside the scans as a plain folder allows
    for scan_id in GOOD:
        shutil.copy(archive / "masks" / f"{scan_id}.mha", images / "masks" / f"{scan_id}.mha")
    return root, images, masks, write_corpus(images), write_corpus(masks)


def _check(out: Path, expected: dict[str, set[str]], root: Path, before: set[Path]) -> pd.DataFrame:
    scans = pd.read_parquet(out / "scans.parquet")
    discs = pd.read_parquet(out / "discs.parquet")
    by_path = {Path(p).name: (s, m) for p, s, m in zip(scans["path"], scans["status"], scans["message"])}
    for name, statuses in expected.items():
        status, message = by_path[name]
        assert status in statuses, f"{name}: {status} ({message})"
        assert message, name
    good = scans[scans.scan_id.isin(GOOD)]
    assert len(good) == len(GOOD) and (good.status == "ok").all()
    assert not discs.duplicated(["scan_id", "level"]).any() and set(discs.scan_id) == set(GOOD)
    assert len(scans) == len(GOOD) + len(expected)
    after = {p for p in root.rglob("*") if out not in p.parents and p != out}
    assert after == before, f"written outside OUT: {sorted(after - before)}"
    return scans


def test_run_gives_every_broken_scan_a_status(corpus, ray_local):
    root, images, _, expected, _ = corpus
    before = {p for p in root.rglob("*")}
    out = root / "scored"
    run_pipeline(images, out, seg_dir=images, cfg=Config(), segment_stage=oracle.OracleSegmentScans)
    _check(out, expected, root, before)
    run_pipeline(images, out, seg_dir=images, cfg=Config(), segment_stage=oracle.OracleSegmentScans)  # a re-run
    _check(out, expected, root, before)


def test_measure_gives_every_broken_mask_a_status(corpus, ray_local):
    root, _, masks, _, expected = corpus
    before = {p for p in root.rglob("*")}
    out = root / "measured"
    run_measure(masks, out, Config())
    _check(out, expected, root, before)
