"""A segmentation stage that returns each scan's ground-truth disc mask: tests the graph, not the model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rayspine.config import Config
from rayspine.io.scans import read_scan
from rayspine.preprocess import to_scan_grid
from rayspine.schema import DISC_LABEL_OFFSET
from rayspine.segment.infer import make_card
from rayspine.pipeline.stages import SegmentScans


class OracleSegmentScans(SegmentScans):
    delay_s = 0.0

    def __init__(self, model_dir: Path, precision: str = "auto"):
        import ray

        self.archive = Path(model_dir)  # the archive itself stands in for a model folder
        self.node_id = ray.get_runtime_context().get_node_id()
        self.segmenter = self

    @staticmethod
    def card(model_dir: Path) -> dict:
        return make_card("oracle", {}, Config())

    def __call__(self, batch):
        self._ids = [scan_id for scan_id, status in zip(batch["scan_id"], batch["status"]) if status == "ok"]
        return super().__call__(batch)

    def logits(self, prepared):
        """Confident logits of the ground-truth foreground, carried onto the network's grid."""
        scan_id = self._ids.pop(0)
        time.sleep(self.delay_s)
        labels = read_scan(self.archive / "masks" / f"{scan_id}.mha", check_voxels=False)
        foreground = labels.with_voxels((labels.voxels > DISC_LABEL_OFFSET).astype(np.uint8))
        on_net_grid = to_scan_grid(foreground, prepared, interpolation="nearest").voxels
        return prepared.with_voxels(np.where(on_net_grid > 0, 20.0, -20.0).astype(np.float32))


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
