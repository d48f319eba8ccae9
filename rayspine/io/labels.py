"""Label schemes of disc masks made by other tools, and their translation into SPIDER's disc labels.

rayspine measures SPIDER label masks (disc 200 + level, the level counted from the bottom: 201 = L5/S1)
and binary 0/1 masks (discs = connected components). Masks from TotalSpineSeg, SPINEPS or any nnU-Net
with one label per disc use other numbers; this module says which disc each label is and relabels a mask
into SPIDER's disc labels so that the measurement code gives identical geometry. Pure numpy: arrays in,
arrays out, no files.

Levels are SPIDER's: the number of the disc counted from the bottom of *this* spine, 1 = the lumbosacral
disc. A spine with six lumbar vertebrae (L6) or thirteen thoracic ones (T13) keeps its anatomical names
(``L6/S1``, ``T13/L1``) and is flagged ``transitional`` instead of being silently renamed: its L6/S1 is
level 1 (SPIDER's "L5/S1" by count), its L5/L6 level 2, and so on.

The schemes were checked against the tools' own label maps (see each scheme's ``citation``):

- SPIDER: van der Graaf et al., Sci Data 11, 264 (2024); the challenge's label description: 1..25
  vertebrae from the bottom (L5 = 1), 100 canal, 101..125 partly visible vertebrae, 201..225 discs from the
  bottom (L5/S1 = 201); as ``rayspine.schema``.
- SPINEPS ``seg-vert`` instance masks: github.com/Hendrik-code/TPTBox ``TPTBox/core/vert_constants.py``
  (commit f43f7fb51a158e9316f50988c2b0b04e01bc35b1: C1..C7 = 1..7, T1..T12 = 8..19, T13 = 28, L1..L6 =
  20..25, S1 = 26, coccyx 27, S2..S6 = 29..33, IVD = vertebra + 100, endplate = vertebra + 200) and
  github.com/Hendrik-code/spineps ``README.md`` ("the label 119 is the IVD below the T12 vertebra") and
  ``spineps/phase_post.py::add_ivd_ep_vert_label`` (each disc takes the label of the vertebra above it)
  at commit 60cc736627005ab3ebe4acd98e5b318108ae2360.
- TotalSpineSeg ``step2_output`` (release r20240921 and later): github.com/neuropoly/totalspineseg
  ``README.md`` "List of Classes" and ``totalspineseg/resources/labels_maps/tss_map.json`` at commit
  ddab04b1a7a488abca2374e20752f51997280ee3; the L5/L6 disc 96 (with L6 = 46) from commit 9c038a2 ("add L6
  and L5-L6") and ``totalspineseg/inference.py`` (96: 'L5L6'); ``utils/iterative_label.py`` numbers up to six
  lumbar discs from 91 and keeps 100 for the disc on the sacrum.
- TotalSpineSeg before r20240921 (tags r20240220 .. r20240826): ``README.md`` "List of Classes" at tag
  r20240826 (commit 96c0ca8258e0640b6e5da7efd9a41a633817bcae): vertebrae 18 (L5) .. 41 (C1), sacrum 92,
  cord 200, canal 201, discs 202 (L5/S) .. 224 (C2/C3). Changed by commit c96c9f0 (2024-09-14).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ..schema import DISC_LABEL_OFFSET, MAX_DISC_LEVEL

__all__ = [
    "SCHEMES",
    "DiscLevel",
    "LabelScheme",
    "LabelSchemeError",
    "check_scheme",
    "detect_schemes",
    "disc_levels",
    "level_name",
    "resolve_scheme",
    "spider_label_table",
    "to_spider",
]


class LabelSchemeError(ValueError):
    """A mask that does not fit the label scheme it was read with (the message names the ones that fit)."""


# --- anatomy -------------------------------------------------------------------------------------
_CERVICAL = [f"C{i}" for i in range(1, 8)]
_THORACIC = [f"T{i}" for i in range(1, 13)]
_LUMBAR = [f"L{i}" for i in range(1, 6)]
SACRUM = "S1"
LUMBOSACRAL = "lumbosacral"  # "the disc on the sacrum", whichever lumbar vertebra sits above it
# Levels 1..23: L5/S1 .. C2/C3. C1 has no disc below it (C1/C2 is a joint).
MAX_NAMED_LEVEL = 23


def _spine_from_bottom(anomalies: frozenset[str] = frozenset()) -> list[str]:
    """Vertebrae from the sacrum up: index i (>= 1) is the vertebra above disc level i."""
    thoracic = list(_THORACIC)
    if "no T12" in anomalies:
        thoracic.remove("T12")
    if "T13" in anomalies:
        thoracic.append("T13")
    lumbar = list(_LUMBAR)
    if "L7" in anomalies:
        lumbar += ["L6", "L7"]
    elif "L6" in anomalies:
        lumbar.append("L6")
    top_down = _CERVICAL + thoracic + lumbar + [SACRUM]
    return top_down[::-1]


_STANDARD = _spine_from_bottom()
_STANDARD_NAMES = {level: f"{_STANDARD[level]}/{_STANDARD[level - 1]}" for level in range(1, MAX_NAMED_LEVEL + 1)}


def level_name(level: int) -> str:
    """SPIDER's level (from the bottom) as a disc name in a spine of 5 lumbar and 12 thoracic vertebrae.

    1 -> 'L5/S1', 2 -> 'L4/L5', 5 -> 'L1/L2', 6 -> 'T12/L1', 17 -> 'T1/T2', 18 -> 'C7/T1', 23 -> 'C2/C3'.
    """
    if isinstance(level, bool) or int(level) != level or not 1 <= level <= MAX_NAMED_LEVEL:
        raise ValueError(f"disc level {level!r}: levels run 1 (L5/S1) .. {MAX_NAMED_LEVEL} (C2/C3)")
    return _STANDARD_NAMES[int(level)]


def _nominal_name(level: int) -> str:
    return _STANDARD_NAMES.get(level, f"level {level}")


# --- schemes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscLevel:
    """Which disc a label is: SPIDER level (from the bottom of this spine) and its anatomical name.

    ``transitional`` is True when this spine's count differs from the usual 5 lumbar / 12 thoracic vertebrae
    (L6, T13, no T12) and the name is therefore not ``level_name(level)``: the level is still the count from
    the bottom, as SPIDER numbers discs, and the name is what the tool called the disc.
    """

    level: int
    name: str
    transitional: bool = False


@dataclass(frozen=True)
class LabelScheme:
    """One tool's label numbers.

    ``discs`` maps each disc label to (level, name) in a spine of 5 lumbar and 12 thoracic vertebrae; labels
    that only exist in a transitional spine (SPINEPS 125 = L6/S1, 128 = T13/L1; TotalSpineSeg 96 = L5/L6)
    carry the level they have in that spine. ``non_discs`` names the other structures of the scheme;
    ``transitional`` the labels whose presence says the spine has an extra (or missing) vertebra.
    ``kind``: 'fixed' (the label says the disc), 'counted' (one label per disc, levels counted from the
    bottom), 'components' (0/1 mask: discs are connected components).
    """

    name: str
    description: str
    citation: str
    discs: Mapping[int, tuple[int, str]]
    non_discs: Mapping[int, str]
    transitional: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    kind: str = "fixed"
    _upper: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    @property
    def labels(self) -> frozenset[int]:
        """Every label the scheme knows (discs and other structures)."""
        return frozenset(self.discs) | frozenset(self.non_discs)


def _freeze(d: dict) -> Mapping:
    return MappingProxyType(dict(sorted(d.items())))


def _anatomical(name, description, citation, upper: dict[int, str], non_discs: dict[int, str], transitional: dict[int, str]) -> LabelScheme:
    """A scheme whose disc labels name the vertebra above the disc (the level follows from the anatomy)."""
    discs = {}
    for label, above in upper.items():
        anomalies = frozenset({transitional[label]}) if label in transitional else frozenset()
        spine = _spine_from_bottom(anomalies)
        level = 1 if above == LUMBOSACRAL else spine.index(above)
        discs[label] = (level, f"{spine[level]}/{spine[level - 1]}")
    return LabelScheme(name, description, citation, _freeze(discs), _freeze(non_discs), _freeze(transitional), "fixed", _freeze(upper))


def _spider() -> LabelScheme:
    discs = {DISC_LABEL_OFFSET + k: (k, _nominal_name(k)) for k in range(1, MAX_DISC_LEVEL + 1)}
    non_discs = {k: f"vertebra {k} from the bottom" for k in range(1, MAX_DISC_LEVEL + 1)}
    non_discs[100] = "spinal canal"
    non_discs.update({100 + k: f"vertebra {k} from the bottom, partly visible" for k in range(1, MAX_DISC_LEVEL + 1)})
    return LabelScheme(
        "spider",
        "SPIDER: discs 200 + level from the bottom (201 = L5/S1), vertebrae 1..25 from the bottom, canal 100, "
        "partly visible vertebrae 101..125",
        "van der Graaf et al., Sci Data 11, 264 (2024), doi:10.1038/s41597-024-03090-w; label description of "
        "the SPIDER challenge (spider.grand-challenge.org)",
        _freeze(discs),
        _freeze(non_discs),
    )


# TPTBox numbering (TPTBox/core/vert_constants.py, class Vertebra_Instance).
_TPTBOX_VERTEBRAE = {**{i + 1: v for i, v in enumerate(_CERVICAL + _THORACIC)}, **{20 + i: f"L{i + 1}" for i in range(6)}}
_TPTBOX_VERTEBRAE.update({26: "S1", 27: "coccyx", 28: "T13", **{29 + i: f"S{i + 2}" for i in range(5)}})


def _spineps() -> LabelScheme:
    upper = {100 + k: v for k, v in _TPTBOX_VERTEBRAE.items() if v[0] in "CTL" and v != "C1"}
    non_discs = {k: f"vertebra {v}" for k, v in _TPTBOX_VERTEBRAE.items()}
    non_discs[101] = "IVD label of C1 (C1/C2 has no disc)"
    sacral = {k: v for k, v in _TPTBOX_VERTEBRAE.items() if v[0] not in "CTL"}
    non_discs.update({100 + k: f"IVD label of {v} (sacral/coccygeal, not measured)" for k, v in sacral.items()})
    non_discs.update({200 + k: f"endplate of {v}" for k, v in _TPTBOX_VERTEBRAE.items()})
    transitional = {25: "L6", 125: "L6", 28: "T13", 128: "T13"}
    return _anatomical(
        "spineps",
        "SPINEPS seg-vert instance mask labelled by VERIDAH: disc = 100 + the vertebra above it (TPTBox numbers: "
        "C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24, L6 = 25, T13 = 28, sacrum 26), so 124 = L5/S1 .. "
        "120 = L1/L2, 119 = T12/L1; endplates 200 + vertebra",
        "Möller et al., Eur Radiol (2024), doi:10.1007/s00330-024-11155-y; TPTBox/core/vert_constants.py "
        "(Hendrik-code/TPTBox f43f7fb5), spineps README.md and phase_post.py (Hendrik-code/spineps 60cc7366)",
        upper,
        non_discs,
        transitional,
    )


def _totalspineseg() -> LabelScheme:
    upper = {63 + i: f"C{i + 2}" for i in range(5)}  # 63 C2/C3 .. 67 C6/C7
    upper[71] = "C7"
    upper.update({72 + i: f"T{i + 1}" for i in range(11)})  # 72 T1/T2 .. 82 T11/T12
    upper.update({91: "T12", 92: "L1", 93: "L2", 94: "L3", 95: "L4", 96: "L5", 100: LUMBOSACRAL})
    non_discs = {1: "spinal cord", 2: "spinal canal", 50: "sacrum"}
    non_discs.update({11 + i: f"vertebra C{i + 1}" for i in range(7)})
    non_discs.update({21 + i: f"vertebra T{i + 1}" for i in range(12)})
    non_discs.update({41 + i: f"vertebra L{i + 1}" for i in range(7)})
    transitional = {46: "L6", 96: "L6", 47: "L7"}
    return _anatomical(
        "totalspineseg",
        "TotalSpineSeg step2_output (weights r20240921 and later): discs 92 L1/L2, 93 L2/L3, 94 L3/L4, 95 L4/L5, "
        "100 L5/S, 91 T12/L1, 72..82 T1/T2..T11/T12, 71 C7/T1, 63..67 C2/C3..C6/C7, 96 L5/L6 (with L6 = 46); "
        "vertebrae 11..17, 21..32, 41..46, sacrum 50, cord 1, canal 2",
        "Warszawer et al., TotalSpineSeg (2025); neuropoly/totalspineseg README.md 'List of Classes' and "
        "totalspineseg/resources/labels_maps/tss_map.json (ddab04b1)",
        upper,
        non_discs,
        transitional,
    )


def _totalspineseg_legacy() -> LabelScheme:
    # 202 = L5/S, then up the spine one label per disc to 224 = C2/C3: label = 201 + standard level.
    upper = {201 + level: _STANDARD[level] for level in range(2, MAX_NAMED_LEVEL + 1)}
    upper[202] = LUMBOSACRAL
    non_discs = {92: "sacrum", 200: "spinal cord", 201: "spinal canal"}
    bottom_up = _STANDARD[1:]  # L5, L4, ..., C1
    non_discs.update({18 + i: f"vertebra {v}" for i, v in enumerate(bottom_up)})  # 18 L5 .. 41 C1
    return _anatomical(
        "totalspineseg-legacy",
        "TotalSpineSeg before release r20240921: discs 202 L5/S, 203 L4/L5 .. 206 L1/L2, 207 T12/L1 .. "
        "224 C2/C3; vertebrae 18 (L5) .. 41 (C1), sacrum 92, cord 200, canal 201",
        "neuropoly/totalspineseg README.md 'List of Classes' at tag r20240826 (96c0ca82); changed by c96c9f0",
        upper,
        non_discs,
        {},
    )


def _generic(name, description, kind) -> LabelScheme:
    return LabelScheme(name, description, "", MappingProxyType({}), MappingProxyType({}), MappingProxyType({}), kind)


SCHEMES: Mapping[str, LabelScheme] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spider(),
            _spineps(),
            _totalspineseg(),
            _totalspineseg_legacy(),
            _generic(
                "instances",
                "one distinct positive label per disc (any numbers, e.g. an nnU-Net trained on its own labels); "
                "every label is a disc and levels are counted from the bottom of the mask (its lowest disc is "
                "taken as L5/S1)",
                "counted",
            ),
            _generic("binary", "0/1 disc mask: the discs are its connected components (rayspine.measure.instances)", "components"),
        )
    }
)
# In this order detect_schemes lists the schemes; 'instances' fits almost anything and comes last.
_DETECT_ORDER = ("spider", "spineps", "totalspineseg", "totalspineseg-legacy", "binary", "instances")


# --- reading a mask ------------------------------------------------------------------------------
_LUT_MAX = 1 << 16  # labels up to this are looked up in a table, larger ones sorted
def _present(labels: np.ndarray) -> tuple[list[int], str | None]:
    """The nonzero labels of a mask, or the reason it holds no usable labels."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return [], "the mask is empty"
    if labels.dtype == bool:
        return ([1] if labels.any() else []), None
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        return [], f"mask dtype {labels.dtype} is not a label type"
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all():
            return [], "the mask has NaN or infinite voxels"
        if (labels != np.round(labels)).any():
            return [], "the mask has fractional values: a probability map, or a mask resampled without nearest neighbour"
    if labels.min() < 0:
        return [], f"the mask has negative labels ({labels.min():g})"
    if labels.max() <= _LUT_MAX:
        # bincount is linear (np.unique sorts); slab by slab to keep the int64 copy small
        slabs = labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels.reshape(1, -1)
        counts = np.zeros(int(labels.max()) + 1, dtype=np.int64)
        for slab in slabs:
            counts += np.bincount(_as_index(slab), minlength=counts.size)
        values = np.flatnonzero(counts)
    else:
        values = np.unique(labels)
    return [int(v) for v in values if v != 0], None


def _as_index(a: np.ndarray) -> np.ndarray:
    return a if np.issubdtype(a.dtype, np.integer) else a.astype(np.int64)


def _ranges(values) -> str:
    """[119, 120, 121, 124] -> '119..121, 124'."""
    values = sorted(values)
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}..{v}")
            start = None
    return ", ".join(parts)


def _misfit(scheme: LabelScheme, present: list[int]) -> str | None:
    """Why ``present`` (the nonzero labels of a mask) does not fit ``scheme``; None when it fits."""
    values = set(present)
    if not values:
        return "the mask has no labels"
    if scheme.kind == "components":
        if values != {1}:
            return f"a binary mask holds only 0 and 1, this one holds {_ranges(values)}"
        return None
    if scheme.kind == "counted":
        if values == {1}:
            return "the mask holds only 0 and 1: a binary mask, whose discs are its connected components"
        if len(values) > MAX_DISC_LEVEL:
            return (f"{len(values)} labels, more than the {MAX_DISC_LEVEL} discs of a spine "
                    "(are vertebrae or other structures labelled too?)")
        return None
    unknown = values - scheme.labels
    if unknown:
        return f"labels not in the scheme: {_ranges(unknown)}"
    if not values & set(scheme.discs):
        found = "; ".join(f"{_ranges([v])} = {scheme.non_discs[v]}" for v in sorted(values)[:4])
        more = ", ..." if len(values) > 4 else ""
        return f"none of its labels is a disc in this scheme (it read {found}{more})"
    if scheme.name == "spider":
        both = sorted(k for k in values if k <= MAX_DISC_LEVEL and 100 + k in values)
        if both:
            return (f"vertebra {both[0]} is labelled both whole ({both[0]}) and partly visible ({100 + both[0]}), "
                    "which SPIDER never does")
    if scheme.name == "spineps":
        vertebrae = {v for v in values if v <= 33}
        spinal = {v for v in vertebrae if v <= 25 or v == 28}
        if 26 in vertebrae and spinal and max(spinal) < 20:
            return ("its sacrum (26) lies below vertebrae labelled only cervical/thoracic "
                    f"({_ranges(spinal)}): SPINEPS numbers vertebrae from the top of the image (1, 2, ...) unless "
                    "its labelling model VERIDAH ran (-model_labeling); rerun it with VERIDAH, or keep only the disc "
                    "labels (101..) and read them as 'instances'")
    return None


def _hints(present: list[int]) -> list[str]:
    values = set(present)
    hints = []
    if 100 in values and values <= {26, *range(41, 50), 60, 61, 62, 100} and values & {49, 60, 61, 62}:
        hints.append("this looks like SPINEPS's semantic mask (seg-spine: every disc is 100); "
                     "read its vertebra instance mask (seg-vert) instead")
    return hints


def detect_schemes(labels: np.ndarray) -> list[str]:
    """The schemes a mask fits, by its label values: tools' schemes first, 'binary', then 'instances' last.

    Value sets overlap (SPIDER's discs 202..224 are legacy TotalSpineSeg's discs 202..224, one level apart;
    SPIDER's 201 disc is legacy TotalSpineSeg's canal), so more than one may fit: then only the user knows.
    """
    present, bad = _present(labels)
    if bad:
        return []
    return [name for name in _DETECT_ORDER if _misfit(SCHEMES[name], present) is None]


def _overlap_note(present: list[int], names: list[str]) -> str:
    """Where the fitting schemes disagree on a label of this mask, one example (two discs first)."""
    examples = []
    for label in present:
        readings, n_discs = {}, 0
        for n in names:
            s = SCHEMES[n]
            if label in s.discs:
                readings[n] = s.discs[label][1]
                n_discs += 1
            elif label in s.non_discs:
                readings[n] = s.non_discs[label]
        if len(readings) > 1 and len(set(readings.values())) > 1:
            said = " but ".join(f"{r} in '{n}'" for n, r in readings.items())
            examples.append((-n_discs, f"label {label} is {said}"))
    return min(examples, key=lambda e: e[0])[1] if examples else ""


def _short(name: str) -> str:
    return SCHEMES[name].description.split(":")[0]


def _suggestion(present: list[int], exclude: str | None = None) -> str:
    fitting = [n for n in _DETECT_ORDER if n != exclude and _misfit(SCHEMES[n], present) is None]
    named = [n for n in fitting if n != "instances"]
    if len(named) == 1:
        return f"It fits scheme '{named[0]}' ({_short(named[0])}): pass scheme='{named[0]}'."
    if len(named) > 1:
        note = _overlap_note(present, named)
        return (f"It fits several schemes, {', '.join(repr(n) for n in named)}, which read the same labels as "
                f"different discs{' (' + note + ')' if note else ''}: name the scheme of the tool that made the mask.")
    if "instances" in fitting:
        return ("No tool's scheme fits it. If every disc has a label of its own and nothing else is labelled, "
                "pass scheme='instances' (levels counted from the bottom of the mask).")
    return "No scheme fits it."


def check_scheme(labels: np.ndarray, scheme: str) -> LabelScheme:
    """The scheme, after checking that the mask fits it; ``LabelSchemeError`` (naming what fits) if not."""
    if scheme not in SCHEMES:
        raise LabelSchemeError(f"unknown label scheme {scheme!r}; known: {', '.join(SCHEMES)} (or 'auto')")
    present, bad = _present(labels)
    if bad:
        raise LabelSchemeError(f"mask unusable as labels: {bad}")
    reason = _misfit(SCHEMES[scheme], present)
    if reason is not None:
        hints = " ".join(_hints(present))
        raise LabelSchemeError(
            f"mask (labels {_ranges(present) or 'none'}) does not fit label scheme '{scheme}': {reason}. "
            f"{_suggestion(present, exclude=scheme)}{' ' + hints if hints else ''}"
        )
    return SCHEMES[scheme]


def resolve_scheme(labels: np.ndarray, scheme: str = "auto") -> LabelScheme:
    """``scheme`` checked against the mask; 'auto' picks the one tool scheme (or 'binary') that fits.

    'auto' refuses when several fit (the user must name one) and never picks 'instances' by itself: counting
    levels from the bottom is an assumption the user must make.
    """
    if scheme != "auto":
        return check_scheme(labels, scheme)
    present, bad = _present(labels)
    if bad:
        raise LabelSchemeError(f"mask unusable as labels: {bad}")
    named = [n for n in _DETECT_ORDER if n != "instances" and _misfit(SCHEMES[n], present) is None]
    if len(named) == 1:
        return SCHEMES[named[0]]
    raise LabelSchemeError(f"cannot tell the label scheme of this mask (labels {_ranges(present) or 'none'}). "
                           f"{_suggestion(present)}{' ' + ' '.join(_hints(present)) if _hints(present) else ''}")


# --- levels --------------------------------------------------------------------------------------
def _anomalies(scheme: LabelScheme, present: set[int]) -> frozenset[str]:
    found = {scheme.transitional[v] for v in present if v in scheme.transitional}
    # VERIDAH allows eleven thoracic vertebrae (a skip after T11, spineps/utils/find_min_cost_path.py):
    # T11 and L1 present with no T12 and no T12 disc, so T11's disc (118) is T11/L1.
    if scheme.name == "spineps" and {18, 20} <= present and not present & {19, 119, 28, 128}:
        found.add("no T12")
    return frozenset(found)


def _counted_levels(labels: np.ndarray, present: list[int], si_axis: int, increasing: str) -> dict[int, int]:
    """Instance labels ranked from the bottom by the mean position of their voxels along ``si_axis``."""
    if increasing not in ("superior", "inferior"):
        raise ValueError(f"increasing={increasing!r}: 'superior' or 'inferior' (the way the index runs along si_axis)")
    labels = np.asarray(labels)
    axis = si_axis % labels.ndim
    if max(present) <= _LUT_MAX:
        lut = np.zeros(max(present) + 1, dtype=np.int32)
        lut[present] = np.arange(1, len(present) + 1)
        compact = lut[_as_index(labels)]
    else:
        index = {v: i for i, v in enumerate(present, start=1)}
        values, inverse = np.unique(labels, return_inverse=True)
        compact = np.array([index.get(int(v), 0) for v in values], dtype=np.int32)[inverse.reshape(labels.shape)]
    n = len(present) + 1
    counts = np.zeros(n)
    moments = np.zeros(n)
    for i in range(labels.shape[axis]):
        c = np.bincount(np.take(compact, i, axis=axis).ravel(), minlength=n)
        counts += c
        moments += i * c
    centre = moments[1:] / counts[1:]
    if increasing == "inferior":
        centre = -centre
    order = sorted(range(len(present)), key=lambda k: (centre[k], present[k]))
    return {present[k]: rank for rank, k in enumerate(order, start=1)}


def disc_levels(labels: np.ndarray, scheme: str, *, si_axis: int = 2, increasing: str = "superior") -> dict[int, DiscLevel]:
    """Each disc label present in the mask -> its ``DiscLevel`` (SPIDER level from the bottom, name, transitional).

    ``scheme``: a name in ``SCHEMES`` or 'auto'. Labels of other structures (vertebrae, canal, endplates) are
    left out. Only 'instances' uses the geometry: ``si_axis`` is the array axis that runs along the spine
    and ``increasing`` the way its index runs (rayspine's [x, y, z] LPS arrays: axis 2, 'superior'; a
    SimpleITK array [k, j, i] of an image whose j runs downwards: axis 1, 'inferior').
    ``LabelSchemeError`` for a mask that does not fit the scheme (the message names the schemes that do) and
    for a 'binary' mask: its discs are its connected components, measured by
    ``rayspine.measure.instances.disc_instances(mask, spacing, binary=True)``.
    """
    s = resolve_scheme(labels, scheme)
    present, _ = _present(labels)
    if s.kind == "components":
        raise LabelSchemeError("a binary mask has no label per disc: its discs are its connected components, "
                               "counted from the bottom by rayspine.measure.instances.disc_instances(mask, spacing, binary=True)")
    if s.kind == "counted":
        ranks = _counted_levels(labels, present, si_axis, increasing)
        return {label: DiscLevel(level, _nominal_name(level)) for label, level in sorted(ranks.items())}
    discs = [v for v in present if v in s.discs]
    if s.name == "spider":
        return {v: DiscLevel(*s.discs[v]) for v in discs}
    anomalies = _anomalies(s, set(present))
    spine = _spine_from_bottom(anomalies)
    out = {}
    for v in discs:
        above = s._upper[v]
        level = 1 if above == LUMBOSACRAL else spine.index(above)
        name = f"{spine[level]}/{spine[level - 1]}"
        out[v] = DiscLevel(level, name, bool(anomalies) and name != _nominal_name(level))
    return out


def to_spider(labels: np.ndarray, scheme: str, *, si_axis: int = 2, increasing: str = "superior") -> np.ndarray:
    """The mask relabelled into SPIDER's disc labels (200 + level; 0 elsewhere), uint8, same shape.

    ``rayspine.measure.instances.disc_instances`` then measures exactly the voxels each disc label held. Arguments as
    ``disc_levels``; transitional spines keep their count from the bottom (L6/S1 -> 201).
    """
    levels = disc_levels(labels, scheme, si_axis=si_axis, increasing=increasing)
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    if not levels:
        return out
    top = int(labels.max())
    if top <= _LUT_MAX:
        lut = np.zeros(top + 1, dtype=np.uint8)
        for label, d in levels.items():
            lut[label] = DISC_LABEL_OFFSET + d.level
        out = lut[_as_index(labels)]
    else:
        for label, d in levels.items():
            out[labels == label] = DISC_LABEL_OFFSET + d.level
    return out


# --- SPIDER's label table, for viewers ----------------------------------------------------------
@dataclass(frozen=True)
class LabelEntry:
    """One row of a viewer's label table: value, name and colour (0..255 RGB)."""

    value: int
    name: str
    rgb: tuple[int, int, int]


# Twelve colours far apart (Kelly's list, less white and black) so that neighbouring discs differ.
_PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40))


def spider_label_table() -> list[LabelEntry]:
    """SPIDER's labels with names and colours: discs 201.. ('L5/S1', ...), vertebrae 1.. ('L5', ...), canal 100.

    What ``rayspine export`` writes as ITK-SNAP and Slicer label tables and what the OME-Zarr masks carry as
    label properties. Names assume 5 lumbar and 12 thoracic vertebrae (the level is the count from the bottom).
    """
    table = [LabelEntry(DISC_LABEL_OFFSET + k, _nominal_name(k), _PALETTE[(k - 1) % len(_PALETTE)]) for k in range(1, MAX_DISC_LEVEL + 1)]
    bone = [(241, 214, 145), (216, 186, 120)]
    for k in range(1, MAX_DISC_LEVEL + 1):
        name = _STANDARD[k] if k < len(_STANDARD) else f"vertebra {k}"
        table.append(LabelEntry(k, name, bone[k % 2]))
        table.append(LabelEntry(100 + k, f"{name} (partly visible)", (150, 150, 150)))
    table.append(LabelEntry(100, "spinal canal", (90, 90, 255)))
    return sorted(table, key=lambda e: e.value)
