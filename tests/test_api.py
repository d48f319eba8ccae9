"""The notebook API of rayspine/__init__.py, used as the README shows it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd

import rayspine
from rayspine.autoencode.train import save_autoencoder, train_autoencoder
from rayspine.config import AEConfig
from rayspine.schema import geometric_features
from rayspine.synth import synthesize_archive


def test_import_is_light_and_every_public_name_resolves():
    probe = "import sys, rayspine; print(any(m in sys.modules for m in ('torch', 'ray', 'monai', 'pandas')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
    for name in rayspine.__all__:
        assert callable(getattr(rayspine, name)), name


def test_the_readme_notebook_steps(tmp_path):
    archive = tmp_path / "archive"
    truth = synthesize_archive(archive, patients=2, sites=1, seed=4, size="small")
    index = rayspine.index_archive(archive)
    assert list(index.scan_id) == sorted(truth.scan_id.unique())
    scan = rayspine.measure_mask(rayspine.read_scan(index.mask_path[0]))
    rows = pd.DataFrame(scan.rows)
    assert list(rows.level) == sorted(truth.loc[truth.scan_id == index.scan_id[0], "level"]) and len(scan.crops) == len(rows)

    trained = train_autoencoder(scan.crops, 3, AEConfig(max_epochs=1, channels=(4, 8, 8, 8)))
    save_autoencoder(trained, tmp_path / "ae", (1.4, 1.2, 1.5))
    model = rayspine.load_autoencoder(tmp_path / "ae")
    codes = model.encode(scan.crops)
    assert codes.shape == (len(scan.crops), 3) and model.decode(codes).shape == scan.crops.shape

    discs = rows.assign(patient_id=["p%d" % (i % 5) for i in range(len(rows))], disc_narrowing=[i % 2 for i in range(len(rows))])
    labelled = rayspine.labelled_discs(discs)
    assert len(labelled) == len(rows) and set(labelled.disc_narrowing) == {0, 1}
    assert np.isfinite(labelled[geometric_features()].to_numpy()).all()
