"""A segmentation stage that returns each scan's ground-truth disc mask: tests the graph, not the model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rayspine.io.scans import read_scan
from rayspine.schema import DISC_LABEL_OFFSET
from rayspine.stages import SegmentScans


class OracleSegmentScans(SegmentScans):
    delay_s = 0.0

    def __init__(self, model_dir: Path):
        import ray

        self.archive = Path(model_dir)  # the archive itself stands in for a model folder
        self.node_id = ray.get_runtime_context().get_node_id()
        self.segmenter = self

    def __call__(self, batch):
        self._ids = list(batch["scan_id"])
        return super().__call__(batch)

    def predict(self, volume):
        scan_id = self._ids.pop(0)
        time.sleep(self.delay_s)
        labels = read_scan(self.archive / "masks" / f"{scan_id}.mha", check_voxels=False).voxels
        return volume.with_voxels((labels > DISC_LABEL_OFFSET).astype(np.uint8))


class SlowOracleSegmentScans(OracleSegmentScans):
    delay_s = 2.0


class DyingOnceOracleSegmentScans(OracleSegmentScans):
    """Kills its own actor process in the middle of the first batch it gets (once per archive)."""

    def __call__(self, batch):
        marker = self.archive.parent / f"{self.archive.name}.actor-died"
        if not marker.exists():
            marker.write_text("died")
            import os

            os._exit(1)
        return super().__call__(batch)
