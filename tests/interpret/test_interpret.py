"""Latent traversal and correlations: known answers for the pure parts, then end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tests.phantoms import disc_rotation, grid_points, inside_disc

from rayspine.config import AEConfig, Config
from rayspine.report.figures import central_slices, montage_mosaic
from rayspine.measure.geometry import measure_disc
from rayspine.interpret.command import run_interpret
from rayspine.interpret.correlation import correlation_table, latent_summary
from rayspine.interpret.traversal import measure_decoded, traversal_grid, traversal_table
from rayspine.schema import geometry_columns

SPACING = (1.4, 1.2, 1.5)


def test_traversal_grid_spans_min_to_max_with_others_at_mean():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(50, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    values, codes = traversal_grid(latents, 6)
    assert values.shape == (3, 6) and codes.shape == (3, 6, 3)
    for i in range(3):
        assert values[i, 0] == pytest.approx(latents[:, i].min(), rel=1e-6)
        assert values[i, -1] == pytest.approx(latents[:, i].max(), rel=1e-6)
        assert np.allclose(np.diff(values[i]), (latents[:, i].max() - latents[:, i].min()) / 5, rtol=1e-5)
        np.testing.assert_allclose(codes[i, :, i], values[i])
        others = [j for j in range(3) if j != i]
        np.testing.assert_allclose(codes[i][:, others], np.tile(latents.mean(axis=0)[others], (6, 1)), rtol=1e-6)
    with pytest.raises(ValueError):
        traversal_grid(latents, 1)


def test_correlation_with_linear_function_is_one_and_with_noise_near_zero():
    rng = np.random.default_rng(1)
    n = 400
    table = pd.DataFrame({"z0": rng.normal(size=n), "z1": rng.normal(size=n)})
    table["height_mm"] = 3.0 * table["z0"] + 2.0
    table["ap_width_mm"] = -0.5 * table["z1"] + 0.01 * rng.normal(size=n)
    table["volume_mm3"] = rng.normal(size=n)  # independent noise
    table.loc[:9, "volume_mm3"] = np.nan  # 10 missing values: pairwise-complete n
    table["coronal_angle_deg"] = 7.0  # constant: undefined r
    corr = correlation_table(table, ["z0", "z1"], ["height_mm", "ap_width_mm", "volume_mm3", "coronal_angle_deg"])
    at = corr.set_index(["latent", "feature"])
    assert len(corr) == 2 * (4 + 2)
    assert at.loc[("z0", "height_mm"), "r"] == pytest.approx(1.0, abs=1e-9)
    assert at.loc[("z0", "height_mm"), "p"] < 1e-6
    assert at.loc[("z1", "ap_width_mm"), "r"] < -0.999 and at.loc[("z1", "ap_width_mm"), "p"] < 1e-6
    assert abs(at.loc[("z0", "volume_mm3"), "r"]) < 0.15 and at.loc[("z0", "volume_mm3"), "p"] > 0.001
    assert at.loc[("z0", "volume_mm3"), "n"] == n - 10 and at.loc[("z0", "height_mm"), "n"] == n
    assert np.isnan(at.loc[("z0", "coronal_angle_deg"), "r"])
    # Latent-latent: the diagonal is 1, independent latents near 0.
    assert at.loc[("z1", "z1"), "r"] == pytest.approx(1.0)
    assert abs(at.loc[("z0", "z1"), "r"]) < 0.15
    # Corrected p: never below the raw p, one value per distinct test (mirrored pairs agree), none on the diagonal.
    tested = corr.dropna(subset=["p_fdr"])
    assert (tested["p_fdr"] >= tested["p"] - 1e-15).all() and np.isnan(at.loc[("z0", "z0"), "p_fdr"])
    assert at.loc[("z0", "z1"), "p_fdr"] == at.loc[("z1", "z0"), "p_fdr"]
    # 2 latents x 3 defined features + 1 latent pair = 7 tests: Benjamini-Hochberg by hand for the largest p.
    family = pd.concat([corr[corr.feature.isin(["height_mm", "ap_width_mm", "volume_mm3"])], corr[(corr.latent == "z0") & (corr.feature == "z1")]])
    assert len(family) == 7 and family["p_fdr"].max() == pytest.approx(family["p"].max())


def test_spearman_sees_a_monotone_curve_that_pearson_underrates():
    z = np.linspace(-3, 3, 200)
    table = pd.DataFrame({"z0": z, "height_mm": np.exp(2 * z)})
    at = correlation_table(table, ["z0"], ["height_mm"]).set_index(["latent", "feature"])
    assert at.loc[("z0", "height_mm"), "rho"] == pytest.approx(1.0) and at.loc[("z0", "height_mm"), "r"] < 0.8
    summary = latent_summary(correlation_table(table, ["z0"], ["height_mm"]), ["height_mm"])
    assert summary.loc[0, "tracks"] == "height_mm" and np.isnan(summary.loc[0, "max_abs_r_other_latent"])


def _crop(height, lateral=24.0, ap=18.0, sagittal=0.0, size=32):
    centre = np.array([(size - 1) * s / 2 for s in SPACING])
    return inside_disc(grid_points((size,) * 3, SPACING), centre, disc_rotation(sagittal=sagittal), height, lateral, ap)


def test_measure_decoded_thresholds_at_half_and_measures_like_geometry():
    disc = _crop(6.0, sagittal=10.0)
    probs = np.stack([np.where(disc, 0.7, 0.2), np.where(disc, 0.4, 0.1)]).astype(np.float32)
    got = measure_decoded(probs, SPACING)
    assert list(got.columns) == geometry_columns()
    expected = measure_disc(disc, SPACING)
    assert got.iloc[0].to_dict() == pytest.approx(expected)
    assert got.iloc[0]["sagittal_angle_deg"] == pytest.approx(10.0, abs=2.0)
    assert got.iloc[1]["volume_mm3"] == 0 and np.isnan(got.iloc[1]["height_mm"])  # nothing above 0.5
    table = traversal_table(np.array([[1.0, 2.0]]), got)
    assert table[["latent", "step", "value"]].to_numpy().tolist() == [[0, 0, 1.0], [0, 1, 2.0]]


def test_montage_places_each_latent_in_its_row_and_each_step_in_its_column():
    k, steps, h = 3, 4, 8
    slices = np.zeros((k, steps, 3, h, h), np.float32)
    for i in range(k):
        for j in range(steps):
            for s in range(3):
                slices[i, j, s] = (i * 100 + j * 10 + s) / 1000
    mosaic, (cell_h, cell_w) = montage_mosaic(slices, gap=2)
    assert (cell_h, cell_w) == (h, 3 * h + 4)
    for i in range(k):
        for j in range(steps):
            for s in range(3):
                r0, c0 = i * (cell_h + 2), j * (cell_w + 2) + s * (h + 2)
                assert np.all(mosaic[r0 : r0 + h, c0 : c0 + h] == slices[i, j, s, 0, 0])
    assert np.isnan(mosaic[h, 0]) and np.isnan(mosaic[0, h])  # the gaps
    # central_slices: sagittal is the x-midplane, coronal y, transverse z (rows = the later axis).
    vol = np.zeros((5, 6, 7))
    vol[2, 1, 3] = 1
    sag, cor, tra = central_slices(vol)
    assert sag.shape == (7, 6) and sag[3, 1] == 1
    assert cor.shape == (7, 5) and cor.sum() == 0  # y = 3 holds nothing
    assert tra.shape == (6, 5) and tra[1, 2] == 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 3-latent autoencoder trained for 60 epochs (about 2 s) on 12 crops of discs of known heights and
    tilts: enough that its decoded discs are non-empty, so the traversal has geometry to measure."""
    import torch

    from rayspine.autoencode.train import save_autoencoder
    from rayspine.autoencode.train import train_autoencoder

    torch.set_num_threads(1)
    heights = np.linspace(4.0, 9.0, 12)
    tilts = np.tile([-10.0, 0.0, 10.0], 4)
    crops = np.stack([_crop(hgt, sagittal=t) for hgt, t in zip(heights, tilts)]).astype(np.uint8)
    cfg = AEConfig(max_epochs=60, channels=(4, 8, 8), checkpoint_seconds=0.0, target_iou=1.01, channels_last=False)
    result = train_autoencoder(crops, 3, cfg)
    folder = save_autoencoder(result, tmp_path_factory.mktemp("ae") / "bn3", SPACING)
    return folder, crops


def test_run_interpret_end_to_end_encodes_crops_when_table_has_no_latents(tmp_path, tiny_model):
    from rayspine.autoencode.infer import load_autoencoder
    from rayspine.io.store import write_crops_zarr

    folder, crops = tiny_model
    model = load_autoencoder(folder)
    rows = [measure_disc(c, SPACING) for c in crops]
    discs = pd.DataFrame(rows)
    discs.insert(0, "scan_id", [f"{i // 4}_t2" for i in range(len(crops))])
    discs.insert(1, "patient_id", [str(i // 4) for i in range(len(crops))])
    discs.insert(2, "level", [i % 4 + 1 for i in range(len(crops))])
    discs.insert(3, "status", "ok")
    discs["crop_index"] = [i % 4 for i in range(len(crops))]
    for scan in range(3):
        write_crops_zarr(tmp_path / "crops.zarr", f"{scan}_t2", crops[4 * scan : 4 * scan + 4], [1, 2, 3, 4])
    # One disc too large to crop: it must be left out.
    discs.loc[len(discs)] = {**discs.iloc[0].to_dict(), "level": 9, "status": "too_large", "crop_index": -1}
    discs.to_parquet(tmp_path / "discs.parquet")

    cfg = Config()
    paths = run_interpret(folder, tmp_path / "discs.parquet", tmp_path / "out", cfg)
    assert {p.name for p in paths} == {"traversal.parquet", "traversal.png", "correlation.csv", "correlation.png", "latent_summary.csv",
                                       "paper_claims.json", "paper_claims.md"}
    claims = json.loads((tmp_path / "out" / "paper_claims.json").read_text())
    assert claims["convergence"] == {} and claims["discs"] == len(crops)  # not a sweep's model: no convergence rows
    assert claims["crop_frame"] == "scan"  # the paper's crops; aligned ones are said so in the table's heading
    assert "one latent tracks ap_width_mm" in (tmp_path / "out" / "paper_claims.md").read_text()

    codes = model.encode(crops)
    traversal = pd.read_parquet(tmp_path / "out" / "traversal.parquet")
    assert len(traversal) == 3 * cfg.interpret.points
    assert (traversal["volume_mm3"] > 0).all() and traversal["height_mm"].notna().all()
    sweep = traversal.pivot(index="latent", columns="step", values="value").to_numpy()
    np.testing.assert_allclose(sweep[:, 0], codes.min(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sweep[:, -1], codes.max(axis=0), rtol=1e-4, atol=1e-5)
    # The traversal geometry is what measure_disc reports on the decoded, thresholded discs.
    _, grid = traversal_grid(codes, cfg.interpret.points)
    decoded = model.decode(grid[1])
    for step in (0, cfg.interpret.points - 1):
        got = traversal[(traversal["latent"] == 1) & (traversal["step"] == step)][geometry_columns()].iloc[0].to_dict()
        expected = measure_disc(decoded[step] > 0.5, SPACING)
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-3)

    corr = pd.read_csv(tmp_path / "out" / "correlation.csv")
    assert len(corr) == 3 * (len(geometry_columns()) + 3) and (corr["n"] == len(crops)).all()
    z0 = pd.Series(codes[:, 0])
    expected_r = z0.corr(discs["height_mm"].iloc[: len(crops)])
    got_r = corr[(corr["latent"] == "z0") & (corr["feature"] == "height_mm")]["r"].iloc[0]
    assert got_r == pytest.approx(expected_r, abs=1e-4)
    # Heights vary most among the training discs: some latent feature must follow them.
    assert corr[corr["feature"] == "height_mm"]["r"].abs().max() > 0.5
    assert (tmp_path / "out" / "traversal.png").stat().st_size > 5_000
    # Crops made in another frame than the model learnt are refused, not encoded.
    (tmp_path / "measure.json").write_text(json.dumps({"command": "measure", "settings": {"discs": {"crop_frame": "disc_plane"}}}))
    with pytest.raises(ValueError, match="'disc_plane' frame, the autoencoder learnt 'scan'"):
        run_interpret(folder, tmp_path / "discs.parquet", tmp_path / "out2", cfg)


def _claims_inputs(sizes_converged: dict[int, bool]):
    rng = np.random.default_rng(0)
    rows = [("z0", "ap_width_mm", -0.81), ("z1", "ap_width_mm", 0.10), ("z0", "sagittal_angle_deg", 0.05),
            ("z1", "sagittal_angle_deg", -0.60), ("z0", "z1", 0.30), ("z0", "height_mm", 0.2)]
    corr = pd.DataFrame([{"latent": a, "feature": b, "r": r, "p_fdr": 1e-6, "rho": r, "n": 190} for a, b, r in rows])
    sweep = pd.DataFrame([{"bottleneck": b, "converged": c, "epochs": 300, "train_iou": 0.996 if c else 0.9, "train_iou_ci_low": 0.99 if c else 0.89,
                           "train_iou_ci_high": 0.997 if c else 0.91} for b, c in sizes_converged.items()])
    return corr.sample(frac=1.0, random_state=int(rng.integers(100))), sweep


def test_paper_claims_put_our_figures_beside_the_papers():
    from rayspine.interpret.claims import claims_markdown, paper_claims

    corr, sweep = _claims_inputs({64: True, 8: True, 4: True, 3: False})
    result = paper_claims(corr, sweep)
    assert result["smallest_converged"] == 4
    assert result["latent_pairs_max_abs_r"]["pair"] == ["z0", "z1"] and result["latent_pairs_max_abs_r"]["r"] == pytest.approx(0.30)
    ap, sagittal = result["tracked"]["ap_width_mm"], result["tracked"]["sagittal_angle_deg"]
    assert (ap["latent"], sagittal["latent"]) == ("z0", "z1") and ap["r"] == pytest.approx(-0.81)
    assert ap["ci"][0] < -0.81 < ap["ci"][1] < 0  # Fisher interval around r, n = 190
    table = claims_markdown(result)
    assert "| 4 is the smallest bottleneck that converges | 4 | 4 | yes |" in table
    assert "| bottleneck 3 converges (IoU > 0.995) | never | not converged in 300 epochs" in table and table.count("| yes |") >= 5
    assert "| latents mutually uncorrelated |" in table and table.rstrip().splitlines()[-2].endswith("| yes |")  # AP width: |r| 0.81 >= 0.80
    assert "weaker (|r| at most" in table.splitlines()[-1]  # sagittal angle: |r| 0.60, interval below 0.75

    assert claims_markdown(json.loads(json.dumps(result))) == table  # read back from paper_claims.json: the same table
    # Bottleneck 3 converging too refutes the claim; with only 4 trained it is not tested.
    assert "| 4 is the smallest bottleneck that converges | 4 | 3 | no |" in claims_markdown(paper_claims(*_claims_inputs({4: True, 3: True})))
    assert "not tested (sizes trained: 4) | not tested |" in claims_markdown(paper_claims(*_claims_inputs({4: False})))
    # Stopped before the paper's epoch (the default recipe's budget): neither claim is tested.
    short = paper_claims(*_claims_inputs({64: False, 4: False, 3: False}))
    for size in short["convergence"].values():
        size["epochs"] = 60
    table = claims_markdown(short)
    assert "| bottleneck 4 converges (IoU > 0.995) | epoch 350 | not converged in 60 epochs" in table and "| not tested (60 epochs trained;" in table
    assert "| 4 is the smallest bottleneck that converges | 4 | none converged, sizes 4, 64 trained for fewer epochs than the paper's | not tested |" in table
    assert claims_markdown(json.loads(json.dumps(short))) == table
