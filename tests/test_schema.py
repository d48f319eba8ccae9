"""The geometry columns drive every consumer: a new column is the schema entry plus its measurement."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rayspine import schema  # noqa: E402
from rayspine.config import Config  # noqa: E402
from rayspine.interpret.traversal import measure_decoded  # noqa: E402
from rayspine.io.outputs import write_block_parts  # noqa: E402
from rayspine.io.store import part_path  # noqa: E402
from rayspine.measure import geometry  # noqa: E402
from rayspine.measure.scan import measure_mask  # noqa: E402
from rayspine.predict.cv import feature_sets  # noqa: E402
from rayspine.report.html import site_distributions  # noqa: E402
from rayspine.synth import truth_columns  # noqa: E402
from rayspine.volume import Volume  # noqa: E402
from tests.phantoms import spine_phantom  # noqa: E402

NEW = "wedge_index"


def test_a_new_geometry_column_reaches_every_consumer(monkeypatch, tmp_path):
    # The two edits a new measurement takes: its schema entry and its code in measure_disc.
    monkeypatch.setattr(schema, "GEOMETRY", (*schema.GEOMETRY, schema.GeometryColumn(NEW, "1")))
    original = geometry.measure_disc
    monkeypatch.setattr(geometry, "measure_disc", lambda mask, spacing, direction=None: {**original(mask, spacing, direction), NEW: 0.5})

    measured = measure_mask(Volume(spine_phantom(n_discs=3), (1.0, 1.0, 1.0)), Config())
    assert all(row[NEW] == 0.5 for row in measured.rows)

    part = write_block_parts(tmp_path, [{"scan_id": "s1", "patient_id": "1", "site": "a", "disc_rows": measured.rows}], attempt=0)
    discs = pq.read_table(part_path(tmp_path, "discs", part))
    assert discs.column(NEW).to_pylist() == [0.5] * 3 and discs.schema.field(NEW).metadata == {b"unit": b"1"}

    table = discs.to_pandas()
    assert NEW in feature_sets(table.columns)["geometric"]  # a paper feature unless said otherwise
    figure = site_distributions(table)
    titles = [ax.get_title() for ax in figure.axes if ax.axison]
    assert titles == schema.geometry_columns() and len(titles) == 8  # a panel each, none dropped or blank
    assert NEW in truth_columns()
    assert list(measure_decoded(spine_phantom(n_discs=1)[None, 20:84, 3:67, 0:64] > 0, (1.0, 1.0, 1.0)).columns)[-1] == NEW


def test_volume_is_measured_but_not_a_paper_feature():
    assert "volume_mm3" in schema.geometry_columns() and "volume_mm3" not in schema.geometric_features()
    assert schema.geometric_features() == [c for c in schema.geometry_columns() if c != "volume_mm3"]
    assert set(pd.DataFrame([geometry.measure_disc(spine_phantom(n_discs=1) > 200, (1.0, 1.0, 1.0))]).columns) == set(schema.geometry_columns())
