"""Zarr masks keep their grid losslessly; parts consolidate without duplicates; URIs are staged."""

import numpy as np
import pyarrow as pa
import pytest
import zarr

from rayspine.io import remote
from rayspine.io.store import (
    completed_parts,
    consolidate_parts,
    crop_locations,
    drop_unreferenced_crops,
    part_path,
    read_crops_group,
    read_disc_crops,
    read_mask_zarr,
    read_parts,
    refresh_root_group,
    written_groups,
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
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert transforms[0]["scale"] == [3.3, 0.6, 0.6251234567891234]
    assert transforms[1]["translation"] == [1e-9, 7.0, -12.345678901234]  # z, y, x
    assert {p["label-value"]: p["name"] for p in attrs["image-label"]["properties"]} == {1: "L5", 2: "L4", 201: "L5/S1", 202: "L4/L5"}
    assert not [p for p in (tmp_path / "masks.zarr").iterdir() if p.name.startswith(".")]  # no temp left


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_stores_are_zarr_v3_hierarchies_of_three_files_per_scan(tmp_path):
    rng = np.random.default_rng(2)
    for scan_id in ("a_t1", "b_t2"):
        labels = np.where(rng.random((300, 140, 15)) > 0.7, 201, 0).astype(np.uint8)  # more than one 128-chunk per axis
        write_mask_zarr(tmp_path / "masks.zarr", scan_id, Volume(labels, (0.5, 0.5, 3.0), (1.0, 2.0, 3.0)))
        write_crops_zarr(tmp_path / "crops.zarr", scan_id, (rng.random((5, 8, 8, 8)) > 0.5).astype(np.uint8), [1, 2, 3, 4, 5])
    for name in ("masks.zarr", "crops.zarr"):
        root = tmp_path / name
        assert refresh_root_group(root) == ["a_t1", "b_t2"]
        group = zarr.open_group(str(root), mode="r")
        assert sorted(group.group_keys()) == ["a_t1", "b_t2"]
        assert group.attrs["rayspine"] == {"kind": name.split(".")[0], "scans": ["a_t1", "b_t2"]}
        for scan_id in ("a_t1", "b_t2"):
            assert len(_files(root / scan_id)) == 3, _files(root / scan_id)  # group + array metadata + one shard
        assert not (tmp_path / f".{name}.staging").exists()
    mask = zarr.open_group(str(tmp_path / "masks.zarr"), mode="r")["a_t1"]["0"]
    assert mask.shape == (15, 140, 300) and mask.metadata.dimension_names == ("z", "y", "x")
    assert mask.shards == (15, 256, 384)


def test_a_half_written_scan_is_never_a_member(tmp_path, monkeypatch):
    import rayspine.io.store as store

    write_mask_zarr(tmp_path / "masks.zarr", "done", Volume(np.full((4, 4, 4), 201, np.uint8), (1.0, 1.0, 1.0)))

    def crash(tmp, final):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(store, "_publish", crash)
    with pytest.raises(RuntimeError):
        write_mask_zarr(tmp_path / "masks.zarr", "half", Volume(np.full((4, 4, 4), 201, np.uint8), (1.0, 1.0, 1.0)))
    assert sorted(zarr.open_group(str(tmp_path / "masks.zarr"), mode="r").group_keys()) == ["done"]
    assert written_groups(tmp_path / "masks.zarr") == {"done"}


def test_reads_0_1_stores_without_a_root_group(tmp_path):
    """0.1 wrote each scan as a group of its own, unsharded, under a plain folder."""
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:4, 1:4, 1:3] = 202
    old = zarr.open_group(str(tmp_path / "masks.zarr" / "x_t1"), mode="w", zarr_format=3)
    old.create_array("0", shape=labels.T.shape, dtype=np.uint8, chunks=labels.T.shape)[...] = labels.transpose(2, 1, 0)
    old.attrs.update({"ome": {"version": "0.5"}, "rayspine": {"grid": Volume(labels, (1.0, 2.0, 3.0)).grid()}})
    crops = zarr.open_group(str(tmp_path / "crops.zarr" / "x_t1"), mode="w", zarr_format=3)
    crops.create_array("crops", shape=(1, 4, 4, 4), dtype=np.uint8, chunks=(1, 4, 4, 4))[...] = 1
    crops.attrs["levels"] = [2]
    assert np.array_equal(read_mask_zarr(tmp_path / "masks.zarr", "x_t1").voxels, labels)
    assert read_crops_group(tmp_path / "crops.zarr", "x_t1")[1:] == ([2], ["x_t1"])  # 0.1: every row is the group's scan
    assert not (tmp_path / "masks.zarr" / "zarr.json").exists()
    assert refresh_root_group(tmp_path / "masks.zarr") == ["x_t1"]  # now a hierarchy too
    assert list(zarr.open_group(str(tmp_path / "masks.zarr"), mode="r").group_keys()) == ["x_t1"]


def test_mask_metadata_is_valid_ome_zarr_0_5(tmp_path):
    """Checked with ome-zarr-models (the OME-NGFF 0.5 metadata models), when installed."""
    models = pytest.importorskip("ome_zarr_models.v05.image_label")
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:4, 1:4, 1:3] = 201
    write_mask_zarr(tmp_path / "masks.zarr", "s", Volume(labels, (0.5, 0.6, 3.0), (-4.0, 5.0, 6.0)))
    image = models.ImageLabel.from_zarr(zarr.open_group(str(tmp_path / "masks.zarr" / "s"), mode="r"))
    transforms = image.attributes.ome.multiscales[0].datasets[0].coordinateTransformations
    assert list(transforms[0].scale) == [3.0, 0.6, 0.5] and list(transforms[1].translation) == [6.0, 5.0, -4.0]


def test_crops_round_trip(tmp_path):
    crops = (np.random.default_rng(1).random((3, 8, 8, 8)) > 0.5).astype(np.uint8)
    write_crops_zarr(tmp_path / "crops.zarr", "a", crops, [1, 2, 4])
    back, levels, _ = read_crops_group(tmp_path / "crops.zarr", "a")
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
    # What a failed run leaves at a URI: tests/io/test_remote.py


def test_ome_zarr_py_reads_a_mask_as_a_label_image_with_its_scale_and_origin(tmp_path):
    """ome-zarr-py is the reader behind napari-ome-zarr: the mask must come out as a Label multiscale image."""
    reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    labels = np.zeros((30, 20, 10), np.uint8)
    labels[5:20, 5:15, 2:5] = 201
    labels[5:20, 5:15, 6:8] = 202
    write_mask_zarr(tmp_path / "masks.zarr", "1_t2", Volume(labels, (0.6, 0.7, 3.3), (-10.0, 20.0, 30.0)))
    (node,) = list(reader.Reader(parse_url(str(tmp_path / "masks.zarr" / "1_t2")))())
    assert {type(s).__name__ for s in node.specs} == {"Label", "Multiscales"}
    scale, translation = node.metadata["coordinateTransformations"][0]
    assert scale["scale"] == [3.3, 0.7, 0.6] and translation["translation"] == [30.0, 20.0, -10.0]
    assert node.metadata["properties"] == {201: {"name": "L5/S1"}, 202: {"name": "L4/L5"}}
    assert np.array_equal(np.asarray(node.data[0]), labels.transpose(2, 1, 0))


def test_a_block_of_scans_writes_its_crops_as_one_group(tmp_path):
    """``write_block_crops``: one group for the block; each disc found by its scan and its row among the
    scan's crops; a scan measured again is read from its latest block; 0.2's per-scan groups read
    alongside; a superseded block is removed, a per-scan group never."""
    import pandas as pd

    from rayspine.io.outputs import write_block_crops

    rng = np.random.default_rng(3)

    def scan(scan_id, n):
        return {"scan_id": scan_id, "crops": (rng.random((n, 4, 4, 4)) > 0.5).astype(np.uint8), "levels": list(range(1, n + 1))}

    first = [scan("a", 2), scan("b", 0), scan("c", 3)]
    key = write_block_crops(tmp_path, first, attempt=7)
    assert key.startswith("7-") and written_groups(tmp_path / "crops.zarr") == {key}
    assert len(_files(tmp_path / "crops.zarr" / key)) == 3  # five discs of three scans: three files
    stacked, levels, scan_ids = read_crops_group(tmp_path / "crops.zarr", key)
    assert stacked.shape == (5, 4, 4, 4) and levels == [1, 2, 1, 2, 3] and scan_ids == ["a", "a", "c", "c", "c"]
    assert crop_locations(tmp_path / "crops.zarr") == {"a": (key, 0), "c": (key, 2)}
    write_crops_zarr(tmp_path / "crops.zarr", "old_t1", first[0]["crops"][::-1], [2, 1])  # 0.2: a group per scan
    discs = pd.DataFrame({"scan_id": ["c", "old_t1", "a"], "crop_index": [1, 0, 0]})
    got = read_disc_crops(tmp_path / "crops.zarr", discs)
    assert np.array_equal(got, np.stack([first[2]["crops"][1], first[0]["crops"][1], first[0]["crops"][0]]))
    with pytest.raises(ValueError, match="scan 'a' has no crop 2"):
        read_disc_crops(tmp_path / "crops.zarr", discs.assign(crop_index=[1, 0, 2]))
    with pytest.raises(ValueError, match="no crops for scan 'zz'"):
        read_disc_crops(tmp_path / "crops.zarr", pd.DataFrame({"scan_id": ["zz"], "crop_index": [0]}))
    again = write_block_crops(tmp_path, [scan("c", 3)], attempt=8)  # c measured again by a later run
    assert crop_locations(tmp_path / "crops.zarr")["c"] == (again, 0)
    assert drop_unreferenced_crops(tmp_path / "crops.zarr", {"c", "old_t1"}) == [key]  # a's rows are gone, c is in block 8
    assert written_groups(tmp_path / "crops.zarr") == {again, "old_t1"}
