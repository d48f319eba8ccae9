"""Label schemes of other tools' masks (rayspine.io.labels): known answers from the tools' own label maps."""

from __future__ import annotations

import numpy as np
import pytest

from rayspine.measure.instances import disc_instances
from rayspine.io.labels import (
    SCHEMES,
    DiscLevel,
    LabelSchemeError,
    detect_schemes,
    disc_levels,
    level_name,
    resolve_scheme,
    to_spider,
)
from tests.conftest import SHARED_DATA, require

IVD_MASKS = SHARED_DATA / "ribeirao_ivd_masks" / "masks"
TOOLS = ["spider", "spineps", "totalspineseg", "totalspineseg-legacy"]


def layout(discs, vertebrae=None, sacrum=None, canal=None, cord=None, endplate=None) -> dict:
    return {"discs": discs, "vertebrae": vertebrae, "sacrum": sacrum, "canal": canal, "cord": cord, "endplate": endplate}


# How each scheme writes a lumbar spine, bottom -> top: five discs (L5/S1 .. L1/L2), the vertebra above each
# (L5 .. L1), and the other structures. Values from the tools' label maps (see rayspine/io/labels.py).
WRITTEN = {
    "spider": layout([201, 202, 203, 204, 205], [1, 2, 3, 4, 5], canal=100),
    "spineps": layout([124, 123, 122, 121, 120], [24, 23, 22, 21, 20], sacrum=26, endplate=200),
    "totalspineseg": layout([100, 95, 94, 93, 92], [45, 44, 43, 42, 41], sacrum=50, canal=2, cord=1),
    "totalspineseg-legacy": layout([202, 203, 204, 205, 206], [18, 19, 20, 21, 22], sacrum=92, canal=201, cord=200),
    "instances": layout([7, 3, 42, 9, 1000]),  # any numbers, not in level order, one above 255; nothing but discs
}


def phantom(discs, vertebrae=None, sacrum=None, canal=None, cord=None, endplate=None, shape=(24, 22, 72)) -> np.ndarray:
    """Box discs and vertebrae stacked up axis 2 (z, inferior -> superior), as in rayspine's [x, y, z] LPS arrays.

    Sacrum z 0..7; disc k (k = 1.. from the bottom) 4 slices at z = 12k - 4, its vertebra the 8 above it;
    discs get wider with k, so a disc moved to another level would change the mask. Canal and cord run
    behind the stack; an endplate offset labels the lowest slice of each vertebra ``endplate + vertebra``.
    """
    out = np.zeros(shape, dtype=np.uint16)
    if sacrum is not None:
        out[4:20, 3:15, 0:8] = sacrum
    for k, label in enumerate(discs, start=1):
        z = 12 * k - 4
        out[6 - k // 2 : 18 + k // 2, 4:14, z : z + 4] = label
        if vertebrae is not None:
            out[4:20, 3:15, z + 4 : z + 12] = vertebrae[k - 1]
            if endplate is not None:
                out[4:20, 3:15, z + 4] = endplate + vertebrae[k - 1]
    if canal is not None:
        out[8:16, 16:21, :] = canal
    if cord is not None:
        out[11:13, 18:20, :] = cord
    return out


EXPECTED_SPIDER = phantom([201, 202, 203, 204, 205]).astype(np.uint8)  # discs only


# --- names and the registry ------------------------------------------------------------------------
def test_level_names_count_from_the_bottom():
    assert [level_name(k) for k in (1, 2, 3, 4, 5)] == ["L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2"]
    assert level_name(6) == "T12/L1" and level_name(7) == "T11/T12" and level_name(17) == "T1/T2"
    assert level_name(18) == "C7/T1" and level_name(23) == "C2/C3"
    for bad in (0, 24, -1, 2.5, True):
        with pytest.raises(ValueError):
            level_name(bad)


def test_registry_matches_the_tools_label_maps():
    spider, spineps = SCHEMES["spider"].discs, SCHEMES["spineps"].discs
    tss, legacy = SCHEMES["totalspineseg"].discs, SCHEMES["totalspineseg-legacy"].discs
    assert spider[201] == (1, "L5/S1") and spider[205] == (5, "L1/L2") and spider[206] == (6, "T12/L1")
    # SPINEPS: 100 + vertebra above (TPTBox: L5 = 24, T12 = 19, C2 = 2, L6 = 25, T13 = 28)
    assert spineps[124] == (1, "L5/S1") and spineps[120] == (5, "L1/L2") and spineps[119] == (6, "T12/L1")
    assert spineps[102] == (23, "C2/C3") and spineps[125] == (1, "L6/S1") and spineps[128] == (6, "T13/L1")
    # TotalSpineSeg r20240921+: README "List of Classes" / tss_map.json
    assert tss[100] == (1, "L5/S1") and tss[95] == (2, "L4/L5") and tss[92] == (5, "L1/L2") and tss[91] == (6, "T12/L1")
    assert tss[82] == (7, "T11/T12") and tss[72] == (17, "T1/T2") and tss[71] == (18, "C7/T1") and tss[63] == (23, "C2/C3")
    assert tss[96] == (2, "L5/L6")
    # TotalSpineSeg before r20240921: 202 L5/S .. 224 C2/C3
    assert legacy[202] == (1, "L5/S1") and legacy[206] == (5, "L1/L2") and legacy[207] == (6, "T12/L1")
    assert legacy[218] == (17, "T1/T2") and legacy[219] == (18, "C7/T1") and legacy[224] == (23, "C2/C3")
    assert SCHEMES["totalspineseg"].non_discs[50] == "sacrum" and SCHEMES["totalspineseg-legacy"].non_discs[201] == "spinal canal"
    assert SCHEMES["spineps"].non_discs[26] == "vertebra S1" and SCHEMES["spineps"].non_discs[224] == "endplate of L5"
    for s in SCHEMES.values():
        assert not set(s.discs) & set(s.non_discs), s.name
        assert s.description and (s.citation or s.kind != "fixed")
        levels = [lv for lv, _ in s.discs.values()]
        if s.name != "spider":  # one label per level in the usual spine (transitional labels aside)
            usual = [lv for label, (lv, _) in s.discs.items() if label not in s.transitional]
            assert len(usual) == len(set(usual)), s.name
        assert all(1 <= lv <= 25 for lv in levels)


# --- every scheme gives the same SPIDER mask --------------------------------------------------------
@pytest.mark.parametrize("scheme", list(WRITTEN))
def test_each_scheme_relabels_to_the_same_spider_mask(scheme):
    mask = phantom(**WRITTEN[scheme])
    assert detect_schemes(mask) == ([scheme, "instances"] if scheme != "instances" else ["instances"])
    out = to_spider(mask, scheme)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    np.testing.assert_array_equal(out, EXPECTED_SPIDER)
    levels = disc_levels(mask, scheme)
    assert [levels[label] for label in WRITTEN[scheme]["discs"]] == [DiscLevel(k, level_name(k)) for k in range(1, 6)]
    if scheme != "instances":
        assert resolve_scheme(mask).name == scheme  # each full mask is told apart by its values alone


def test_measured_discs_are_identical_after_relabelling():
    spacing = (1.0, 1.0, 1.0)
    reference = disc_instances(EXPECTED_SPIDER, spacing)
    relabelled = disc_instances(to_spider(phantom(**WRITTEN["spineps"]), "spineps"), spacing)
    assert [d.level for d in relabelled] == [d.level for d in reference] == [1, 2, 3, 4, 5]
    for a, b in zip(reference, relabelled):
        assert a.bbox == b.bbox and a.volume_mm3 == b.volume_mm3
        np.testing.assert_array_equal(a.mask, b.mask)


def test_instances_follow_the_axis_and_direction_given():
    mask = phantom(**WRITTEN["instances"])
    flipped = mask[:, :, ::-1]  # z now runs superior -> inferior
    np.testing.assert_array_equal(to_spider(flipped, "instances", increasing="inferior")[:, :, ::-1], EXPECTED_SPIDER)
    wrong = disc_levels(flipped, "instances")  # read as if z still ran upwards: the order is reversed
    assert [wrong[v].level for v in WRITTEN["instances"]["discs"]] == [5, 4, 3, 2, 1]
    moved = np.moveaxis(mask, 2, 0)  # the spine along axis 0
    np.testing.assert_array_equal(np.moveaxis(to_spider(moved, "instances", si_axis=0), 0, 2), EXPECTED_SPIDER)


# --- transitional anatomy --------------------------------------------------------------------------
def test_spineps_six_lumbar_vertebrae_are_flagged_not_renamed():
    # L6 (25) on the sacrum: discs 125 L6/S1, 124 L5/L6, 123 L4/L5 .. 120 L1/L2, 119 T12/L1
    mask = phantom(discs=[125, 124, 123, 122, 121, 120, 119], vertebrae=[25, 24, 23, 22, 21, 20, 19], sacrum=26, shape=(24, 22, 96))
    levels = disc_levels(mask, "spineps")
    assert levels[125] == DiscLevel(1, "L6/S1", True)
    assert levels[124] == DiscLevel(2, "L5/L6", True)
    assert levels[123] == DiscLevel(3, "L4/L5", True)
    assert levels[120] == DiscLevel(6, "L1/L2", True)
    assert levels[119] == DiscLevel(7, "T12/L1", True)
    np.testing.assert_array_equal(to_spider(mask, "spineps"), phantom(list(range(201, 208)), shape=(24, 22, 96)))
    # L6 known only from its disc: the same answer
    assert disc_levels(mask * (mask > 100), "spineps") == levels


def test_totalspineseg_six_lumbar_vertebrae_are_flagged():
    # TotalSpineSeg numbers six lumbar discs 91..96 and keeps 100 for the disc on the sacrum (iterative_label.py)
    mask = phantom(discs=[100, 96, 95, 94, 93, 92, 91], vertebrae=[46, 45, 44, 43, 42, 41, 32], sacrum=50, shape=(24, 22, 96))
    levels = disc_levels(mask, "totalspineseg")
    assert levels[100] == DiscLevel(1, "L6/S1", True) and levels[96] == DiscLevel(2, "L5/L6", True)
    assert levels[95] == DiscLevel(3, "L4/L5", True) and levels[91] == DiscLevel(7, "T12/L1", True)
    usual = disc_levels(phantom(**WRITTEN["totalspineseg"]), "totalspineseg")
    assert usual[100] == DiscLevel(1, "L5/S1", False) and usual[95] == DiscLevel(2, "L4/L5", False)


def test_spineps_thirteen_thoracic_vertebrae():
    mask = phantom(discs=[124, 123, 122, 121, 120, 128, 119], vertebrae=[24, 23, 22, 21, 20, 28, 19], sacrum=26, shape=(24, 22, 96))
    levels = disc_levels(mask, "spineps")
    assert levels[120] == DiscLevel(5, "L1/L2", False)  # below the extra vertebra nothing changes
    assert levels[128] == DiscLevel(6, "T13/L1", True)
    assert levels[119] == DiscLevel(7, "T12/T13", True)
    # VERIDAH may also skip T12 (eleven thoracic vertebrae): T11's disc 118 then sits on L1
    skip = phantom(discs=[124, 123, 122, 121, 120, 118], vertebrae=[24, 23, 22, 21, 20, 18], sacrum=26, shape=(24, 22, 84))
    assert disc_levels(skip, "spineps")[118] == DiscLevel(6, "T11/L1", True)


# --- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("truth", TOOLS)
@pytest.mark.parametrize("wrong", TOOLS + ["binary"])
def test_wrong_scheme_is_refused_naming_the_one_that_fits(truth, wrong):
    if truth == wrong:
        return
    mask = phantom(**WRITTEN[truth])
    with pytest.raises(LabelSchemeError, match=f"does not fit label scheme '{wrong}'") as err:
        to_spider(mask, wrong)
    assert f"pass scheme='{truth}'" in str(err.value)


def test_spineps_discs_read_as_spider_suggest_spineps():
    mask = phantom(discs=[124, 123, 122, 121, 120], vertebrae=[24, 23, 22, 21, 20])  # no sacrum, no endplates
    assert detect_schemes(mask) == ["spineps", "instances"]
    with pytest.raises(LabelSchemeError, match="none of its labels is a disc") as err:
        disc_levels(mask, "spider")
    assert "pass scheme='spineps'" in str(err.value)
    # with endplates (200 + vertebra) SPIDER would see discs 220..224; whole and partial vertebra 20 give it away
    plates = phantom(discs=[124, 123, 122, 121, 120], vertebrae=[24, 23, 22, 21, 20], endplate=200)
    with pytest.raises(LabelSchemeError, match="both whole .* and partly visible") as err:
        disc_levels(plates, "spider")
    assert "pass scheme='spineps'" in str(err.value)


def test_overlapping_schemes_must_be_named():
    spider_discs = phantom([201, 202, 203, 204, 205])
    assert detect_schemes(spider_discs) == ["spider", "totalspineseg-legacy", "instances"]
    with pytest.raises(LabelSchemeError, match="several schemes, 'spider', 'totalspineseg-legacy'") as err:
        to_spider(spider_discs, "auto")
    assert "202 is L4/L5 in 'spider' but L5/S1 in 'totalspineseg-legacy'" in str(err.value)
    np.testing.assert_array_equal(to_spider(spider_discs, "spider"), EXPECTED_SPIDER)  # named: no doubt
    legacy_discs = phantom([202, 203, 204, 205, 206])
    assert disc_levels(legacy_discs, "totalspineseg-legacy")[202] == DiscLevel(1, "L5/S1")
    assert disc_levels(legacy_discs, "spider")[202] == DiscLevel(2, "L4/L5")  # the trap the user must avoid
    with pytest.raises(LabelSchemeError, match="name the scheme"):
        disc_levels(legacy_discs, "auto")


def test_spineps_without_veridah_is_refused():
    # without its labelling model SPINEPS numbers vertebrae 1, 2, ... from the top; the sacrum is still 26
    mask = phantom(discs=[105, 104, 103, 102, 101], vertebrae=[5, 4, 3, 2, 1], sacrum=26)
    with pytest.raises(LabelSchemeError, match="VERIDAH"):
        disc_levels(mask, "spineps")
    only_discs = mask * (mask > 100)
    assert disc_levels(only_discs, "instances")[105] == DiscLevel(1, "L5/S1")


def test_binary_masks_are_routed_to_connected_components():
    binary = (EXPECTED_SPIDER > 0).astype(np.uint8)
    assert detect_schemes(binary) == ["binary"] and resolve_scheme(binary).kind == "components"
    assert detect_schemes(binary.astype(bool)) == ["binary"]
    with pytest.raises(LabelSchemeError, match="connected components"):
        to_spider(binary, "binary")
    with pytest.raises(LabelSchemeError, match="binary mask"):
        to_spider(binary, "instances")
    with pytest.raises(LabelSchemeError, match="pass scheme='binary'"):
        to_spider(binary, "spider")


def test_unusable_masks_and_names_are_refused():
    with pytest.raises(LabelSchemeError, match="unknown label scheme 'spine'"):
        to_spider(EXPECTED_SPIDER, "spine")
    with pytest.raises(LabelSchemeError, match="fractional"):
        to_spider(EXPECTED_SPIDER * 0.5, "spider")
    bad = EXPECTED_SPIDER.astype(float)
    bad[0, 0, 0] = np.nan
    with pytest.raises(LabelSchemeError, match="NaN"):
        to_spider(bad, "spider")
    with pytest.raises(LabelSchemeError, match="no labels"):
        to_spider(np.zeros((4, 4, 4), np.uint8), "spider")
    assert detect_schemes(bad) == []
    np.testing.assert_array_equal(to_spider(EXPECTED_SPIDER.astype(np.float32), "spider"), EXPECTED_SPIDER)
    many = np.arange(30, dtype=np.uint8).reshape(1, 1, 30) + 1
    with pytest.raises(LabelSchemeError, match="more than the 25 discs"):
        disc_levels(many, "instances")


def test_spineps_semantic_mask_gets_a_hint():
    semantic = phantom(discs=[100] * 5, vertebrae=[49] * 5, sacrum=26, canal=61)  # seg-spine: every disc is 100
    with pytest.raises(LabelSchemeError, match="seg-vert"):
        disc_levels(semantic, "spineps")


# --- a real mask -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_mask():
    sitk = pytest.importorskip("SimpleITK")
    path = require(IVD_MASKS / "subject_01.nii.gz")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # [k, j, i]; j runs superior -> inferior
    assert sorted(np.unique(labels)) == [0, 201, 202, 203, 204, 205]
    return labels


@pytest.mark.parametrize(
    "scheme, written",
    [
        ("spineps", {201: 124, 202: 123, 203: 122, 204: 121, 205: 120}),
        ("totalspineseg", {201: 100, 202: 95, 203: 94, 204: 93, 205: 92}),
        ("totalspineseg-legacy", {201: 202, 202: 203, 203: 204, 204: 205, 205: 206}),
    ],
)
def test_real_mask_round_trips_through_each_tool(real_mask, scheme, written):
    relabelled = np.zeros_like(real_mask)
    for spider_label, label in written.items():
        relabelled[real_mask == spider_label] = label
    levels = disc_levels(relabelled, scheme)
    assert {label: levels[label].name for label in written.values()} == {
        label: level_name(spider_label - 200) for spider_label, label in written.items()
    }
    np.testing.assert_array_equal(to_spider(relabelled, scheme), real_mask)


def test_real_mask_instances_are_counted_from_the_bottom(real_mask):
    shuffled = {201: 17, 202: 4, 203: 250, 204: 33, 205: 2}
    relabelled = np.zeros_like(real_mask)
    for spider_label, label in shuffled.items():
        relabelled[real_mask == spider_label] = label
    np.testing.assert_array_equal(to_spider(relabelled, "instances", si_axis=1, increasing="inferior"), real_mask)
    # the real disc order along j: L5/S1 lowest; read the other way round the levels come out reversed
    upside_down = disc_levels(relabelled, "instances", si_axis=1, increasing="superior")
    assert [upside_down[shuffled[k]].level for k in (201, 202, 203, 204, 205)] == [5, 4, 3, 2, 1]
