"""The block-wise outputs without Ray: index blocks, parts per block, exactly one row per scan whatever a
killed or retried write left behind, 0.1's per-scan parts still read, rows that will not fit coerced."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rayspine.io.outputs import done_keys, finish_tables, write_block_parts, write_index
from rayspine.io.store import completed_parts, part_path, write_parquet_atomic
from rayspine.schema import SCANS_SCHEMA


def _scan(scan_id: str, n: int = 2, status: str = "ok", **extra) -> dict:
    discs = [{"level": lv, "status": "ok", "message": "", "height_mm": 10.0 + lv, "crop_index": lv - 1} for lv in range(1, n + 1)]
    return {"scan_id": scan_id, "patient_id": scan_id.split("_")[0], "site": "s1", "path": f"/a/{scan_id}.mha",
            "status": status, "message": "", "n_discs": n, "disc_rows": discs, "latent": None, **extra}


def test_index_is_written_in_blocks_small_ones_first(tmp_path):
    scans = [{"scan_id": f"{i}_t1", "patient_id": str(i), "site": "s", "image_path": f"/a/{i}.mha", "status": "ok", "message": ""} for i in range(1000)]
    folder = write_index(tmp_path, scans, block_scans=200)
    sizes = [pq.read_metadata(p).num_rows for p in sorted(folder.glob("*.parquet"))]
    assert sizes == [1, 5, 25, 200, 200, 200, 200, 169]
    ids = pd.concat(pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))).scan_id.tolist()
    assert ids == [s["scan_id"] for s in scans]  # every scan once, in order
    assert [pq.read_metadata(p).num_rows for p in sorted(write_index(tmp_path, scans[:7], block_scans=2).glob("*.parquet"))] == [1, 2, 2, 2]


def test_one_row_per_scan_after_killed_and_retried_writes(tmp_path):
    write_block_parts(tmp_path, [_scan("1_t1"), _scan("2_t1", status="error", n=0)], attempt=1)
    write_block_parts(tmp_path, [_scan("1_t1"), _scan("2_t1", status="error", n=0)], attempt=1)  # Ray retried that write
    killed = write_block_parts(tmp_path, [_scan("3_t1", n=3)], attempt=1)
    part_path(tmp_path, "scans", killed).unlink()  # killed between the discs part and the scans part
    assert done_keys(tmp_path) == {"1_t1", "2_t1"} and done_keys(tmp_path, retry_failed=True) == {"1_t1"}
    write_block_parts(tmp_path, [_scan("3_t1", n=3), _scan("2_t1", n=4)], attempt=2)  # the re-run, --retry-failed
    (tmp_path / "parts" / "scans" / ".2-x.parquet.tmp-1234").write_bytes(b"half a file")
    assert len(completed_parts(tmp_path, "scans")) == 2  # the retried write replaced its own files
    scans, discs = finish_tables(tmp_path, 0, {"run": "x"}, None)
    assert scans.scan_id.tolist() == ["1_t1", "2_t1", "3_t1"] and scans.status.tolist() == ["ok"] * 3
    assert discs.groupby("scan_id").size().to_dict() == {"1_t1": 2, "2_t1": 4, "3_t1": 3}
    assert not discs.duplicated(["scan_id", "level"]).any()
    assert pq.read_schema(tmp_path / "scans.parquet").names == SCANS_SCHEMA.names  # no bookkeeping columns leak out
    # Compacted: one part per table holds what was consolidated, and a resume reads the same rows from it.
    assert [len(completed_parts(tmp_path, t)) for t in ("scans", "discs")] == [1, 1]
    assert done_keys(tmp_path) == {"1_t1", "2_t1", "3_t1"}
    again, again_discs = finish_tables(tmp_path, 0, {"run": "x"}, None)
    pd.testing.assert_frame_equal(again, scans)
    pd.testing.assert_frame_equal(again_discs, discs)


def test_compaction_killed_half_way_loses_and_doubles_nothing(tmp_path):
    write_block_parts(tmp_path, [_scan("1_t1"), _scan("2_t1", n=3)], attempt=1)
    write_block_parts(tmp_path, [_scan("3_t1")], attempt=1)
    finish_tables(tmp_path, 0, {}, None)
    write_block_parts(tmp_path, [_scan("1_t1", n=5)], attempt=2)  # a --retry-failed run rescored 1_t1
    # A compaction killed after its discs part, before its scans part: stale disc rows of another attempt.
    stale = pd.DataFrame({"scan_id": ["2_t1"] * 7, "level": range(1, 8), "status": "ok", "part_key": "2_t1", "attempt": 1})
    write_parquet_atomic(pa.Table.from_pandas(stale, preserve_index=False), part_path(tmp_path, "discs", "compacted-9"))
    scans, discs = finish_tables(tmp_path, 0, {}, None)
    assert discs.groupby("scan_id").size().to_dict() == {"1_t1": 5, "2_t1": 3, "3_t1": 2}
    assert len(scans) == 3 and [len(completed_parts(tmp_path, t)) for t in ("scans", "discs")] == [1, 1]


def test_old_per_scan_parts_still_consolidate_and_resume(tmp_path):
    """0.1 wrote parts/<table>/<scan_id>.parquet with the table's columns only."""
    old = {"scan_id": "1_t1", "patient_id": "1", "site": "s1", "path": "/a/1_t1.mha", "status": "ok", "message": "", "n_discs": 1}
    write_parquet_atomic(pa.Table.from_pylist([old]), part_path(tmp_path, "scans", "1_t1"))
    write_parquet_atomic(pa.Table.from_pylist([{"scan_id": "1_t1", "level": 1, "status": "ok", "height_mm": 9.0}]), part_path(tmp_path, "discs", "1_t1"))
    assert done_keys(tmp_path) == {"1_t1"}
    write_block_parts(tmp_path, [_scan("2_t1")], attempt=5)
    scans, discs = finish_tables(tmp_path, 0, {}, None)
    assert scans.scan_id.tolist() == ["1_t1", "2_t1"] and discs.scan_id.tolist() == ["1_t1", "2_t1", "2_t1"]
    assert discs.height_mm.tolist() == [9.0, 11.0, 12.0]


def test_rows_that_will_not_fit_are_coerced_or_become_that_scans_error(tmp_path):
    # Two files sharing an id and no site (NaN from an overview): once an ArrowTypeError in the driver.
    nan_site = [{"scan_id": "7_t1", "site": math.nan, "patient_id": None, "path": f"/a/7_t1.{ext}", "status": "bad_id",
                 "message": math.nan, "n_discs": 0} for ext in ("mha", "nii.gz")]
    broken = _scan("8_t1")
    broken["disc_rows"] = [{"level": "not a level", "status": "ok"}]
    write_block_parts(tmp_path, [*nan_site, broken, _scan("9_t1", seconds_load="n/a")], attempt=1)
    scans, discs = finish_tables(tmp_path, 0, {}, None)
    assert len(scans) == 4 and scans.site.isna().sum() == 2 and (scans.status[scans.scan_id == "7_t1"] == "bad_id").all()
    eight = scans.set_index("scan_id").loc["8_t1"]
    assert (eight.status, eight.error_stage, eight.error_type) == ("error", "write", "ArrowInvalid") and "column level" in eight.message
    assert discs.scan_id.tolist() == ["9_t1", "9_t1"]  # the scan beside it in the block is whole


def test_latent_columns_come_with_the_disc_rows(tmp_path):
    write_block_parts(tmp_path, [_scan("1_t1", latent=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)), _scan("2_t1", n=0, status="no_discs")], attempt=1)
    _, discs = finish_tables(tmp_path, 2, {}, None)
    assert discs[["z0", "z1"]].to_numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_no_parts_gives_empty_tables(tmp_path):
    scans, discs = finish_tables(tmp_path, 0, {}, None)
    assert len(scans) == len(discs) == 0 and list(scans.columns) == SCANS_SCHEMA.names


def test_the_segmentation_actor_is_warm_before_its_first_batch(monkeypatch, tmp_path):
    """One patch through the network in the constructor, so the first scan does not pay torch's first call."""
    from rayspine.pipeline.stages import SegmentScans
    from rayspine.segment import infer

    calls = []

    class Fake:
        card = {"patch_size": [8, 12, 16]}

        def logits(self, prepared):
            calls.append(prepared.voxels.shape)
            return prepared

    monkeypatch.setattr(infer.Segmenter, "load", classmethod(lambda cls, model_dir, device=None, precision="auto": Fake()))
    SegmentScans(tmp_path)
    assert calls == [(8, 12, 16)]
