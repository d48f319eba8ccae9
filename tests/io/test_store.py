"""Zarr masks keep their grid losslessly; parts consolidate without duplicates; URIs are staged."""

import numpy as np
import pyarrow as pa
import pytest
import zarr

from rayspine.io import remote
from rayspine.io.store import (
    completed_parts,
    consolidate_parts,
    part_path,
    read_crops_zarr,
    read_parts,
    read_mask_zarr,
    write_crops_zarr,
    write_mask_zarr,
    write_parquet_atomic,
)
from rayspine.schema import discs_schema
from rayspine.volume import Volume


def test_mask_zarr_round_trip_is_lossless_and_ome(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(5, 7, 9)).astype(np.uint8) + 200 * (rng.random((5, 7, 9)) > 0.5)
    theta = 0.3
    direction = (np.cos(theta), -np.sin(theta), 0.0, np.sin(theta), np.cos(theta), 0.0, 0.0, 0.0, 1.0)
    mask = Volume(labels, (0.6251234567891234, 0.6, 3.3), (-12.345678901234, 7.0, 1e-9), direction)
    write_mask_zarr(tmp_path / "masks.zarr", "12_t1", mask)
    back = read_mask_zarr(tmp_path / "masks.zarr", "12_t1")
    assert np.array_equal(back.voxels, labels)
    assert back.spacing == mask.spacing and back.origin == mask.origin and back.direction == mask.direction
    attrs = zarr.open_group(str(tmp_path / "masks.zarr" / "12_t1"), mode="r").attrs["ome"]
    assert attrs["version"] == "0.5" and "image-label" in attrs
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [3.3, 0.6, 0.6251234567891234]
    assert not [p for p in (tmp_path / "masks.zarr").iterdir() if p.name.startswith(".")]  # no temp left


def test_crops_round_trip(tmp_path):
    crops = (np.random.default_rng(1).random((3, 8, 8, 8)) > 0.5).astype(np.uint8)
    write_crops_zarr(tmp_path / "crops.zarr", "a", crops, [1, 2, 4])
    back, levels = read_crops_zarr(tmp_path / "crops.zarr", "a")
    assert np.array_equal(back, crops) and levels == [1, 2, 4]


def test_parts_consolidate_once_each(tmp_path):
    schema = discs_schema(2)
    for scan, levels in (("b", [2, 1]), ("a", [1])):
        rows = [{"scan_id": scan, "level": lv, "status": "ok", "z0": 1.0, "z1": 2.0} for lv in levels]
        write_parquet_atomic(pa.Table.from_pylist(rows), part_path(tmp_path, "discs", scan))
    write_parquet_atomic(pa.Table.from_pylist([{"scan_id": "b", "level": 1, "status": "ok"}]), part_path(tmp_path, "discs", "b"))  # rewritten
    (tmp_path / "parts" / "discs" / ".c.parquet.tmp-dead").write_bytes(b"PAR1 half")  # a killed write never counts
    assert [p.stem for p in completed_parts(tmp_path, "discs")] == ["a", "b"]
    rows = read_parts(completed_parts(tmp_path, "discs"), schema)
    assert rows.column("part_file").to_pylist() == ["a", "b"]
    table = consolidate_parts(tmp_path, "discs", rows, schema)
    assert table.column("scan_id").to_pylist() == ["a", "b"] and table.column("level").to_pylist() == [1, 1]
    assert table.schema.field("height_mm").metadata == {b"unit": b"mm"}


def test_uri_inputs_and_outputs_are_staged(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSPINE_SCRATCH", str(tmp_path / "scratch"))
    source = tmp_path / "bucket" / "archive"
    source.mkdir(parents=True)
    (source / "x.txt").write_text("hello")
    with remote.local_input(f"file://{source}") as local:
        assert local != source and (local / "x.txt").read_text() == "hello"
    with remote.local_output(f"file://{tmp_path / 'bucket' / 'out'}") as out:
        (out / "result.txt").write_text("done")
    assert (tmp_path / "bucket" / "out" / "result.txt").read_text() == "done"
    with remote.local_input(str(source)) as plain:
        assert plain == source
    with pytest.raises(RuntimeError):
        with remote.local_output(f"file://{tmp_path / 'bucket' / 'failed'}") as out:
            (out / "partial.txt").write_text("x")
            raise RuntimeError("job failed")
    assert not (tmp_path / "bucket" / "failed" / "partial.txt").exists()  # nothing published on failure
