"""``OUT/report.html``: one page per scored output folder (``run`` or ``measure``) that opens offline.

It shows counts by status and site, the scans with more or fewer discs than the archive's usual
number, the flagged discs (fragments dropped, possibly merged, too large or too small, or a measurement
implausible for the disc's level: ``measure.plausibility``), the disc geometry by level and by site,
a QC picture per scan for the suspicious scans and a few per site (``report.qc``), and any extra
sections (the demo's CV and interpretation folders).

The plots are inlined; the QC pictures are files, ``OUT/qc/<scan_id>.png``, each drawn once and
linked, so a re-written report reads no scan twice. ``OUT/qc/flags.csv`` lists every flagged disc
(the page shows the first ``MAX_ROWS``). The extra sections are remembered in ``OUT/report.json``:
a later re-write (a resumed ``run`` that scored nothing new) keeps them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..measure.plausibility import MIN_DISCS, THRESHOLD, implausible  # noqa: E402
from ..schema import GEOMETRY, USABLE_DISC_STATUSES, ScanStatus, geometry_columns  # noqa: E402
from . import qc  # noqa: E402
from .figures import save  # noqa: E402

log = logging.getLogger(__name__)
LONG_TEXT = ("message", "plausibility", "levels", "path")  # free text that may hold long paths: wrapped anywhere
MAX_ROWS = 50  # rows of a warning table shown on the page; the CSV has them all
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;max-width:100%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td{white-space:nowrap}td.text{white-space:normal;overflow-wrap:break-word}td.long{overflow-wrap:anywhere;min-width:8em}th{background:#f3f3f3;font-weight:600}
td.text,th.text{text-align:left}.scroll{max-width:100%;overflow-x:auto}
img{max-width:100%;height:auto}h2{border-bottom:1px solid #ddd;margin-top:2em}.bad{color:#a00}
pre{max-width:100%;overflow-x:auto;background:#f8f8f8;padding:.5em}
.gallery{display:flex;flex-wrap:wrap;gap:1em}.gallery figure{margin:0;max-width:100%}figcaption{font-size:.85em}"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _png_file(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" alt="{html.escape(path.name)}">'


def _heading(column: str) -> str:
    """'sagittal_angle_deg' -> 'sagittal angle (deg)': short enough to wrap in a table header."""
    units = {c.name: c.unit for c in GEOMETRY}
    if column not in units:
        return column.replace("_", " ")
    stem = column.removesuffix(f"_{units[column]}")
    return f"{stem.replace('_', ' ')} ({units[column]})"


def geometry_distributions(discs: pd.DataFrame, by: str, order=None, names=None):
    """One box plot per geometry column (titled with its name), one box per value of ``by`` (in
    ``order``, labelled with ``names``), of the (measured) discs given."""
    groups = list(order) if order is not None else sorted(discs[by].dropna().unique())
    labels = [str((names or {}).get(g, g)) for g in groups]
    columns = geometry_columns()
    ncols = 4
    nrows = -(-len(columns) // ncols)  # as many rows as the schema's columns need
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.5 * ncols, 3 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        ax.boxplot([discs.loc[discs[by] == g, column].dropna() for g in groups], tick_labels=labels)
        ax.set_title(column, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30 if len(groups) < 8 else 90, labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def site_distributions(discs: pd.DataFrame):
    """One box plot per geometry column, one box per site, of the (measured) discs given."""
    return geometry_distributions(discs, "site")


def level_distributions(discs: pd.DataFrame):
    """One box plot per geometry column, one box per disc level from the bottom (L5/S1 first): levels
    differ more than sites do (real L5/S1 sagittal angle about +30 degrees, L1/L2 about -10)."""
    levels = sorted(discs["level"].dropna().astype(int).unique())
    names = dict(zip(discs["level"], qc.disc_names(discs)))
    return geometry_distributions(discs, "level", levels, names)


def _table(frame: pd.DataFrame, links: dict[str, str] | None = None) -> str:
    """A table that fits the page: geometry headers with units, text columns left-aligned, long text
    wrapped; ``links`` makes each ``scan_id`` a link to its QC picture."""
    frame = frame.copy()
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    head = "".join(f'<th class="{"text" if c in text else ""}">{html.escape(_heading(str(c)))}</th>' for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record):
            if isinstance(value, float | np.floating):
                shown = "" if np.isnan(value) else f"{value:.3g}"
            else:
                shown = html.escape("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value))
            if column == "scan_id" and links and value in links:
                shown = f'<a href="{links[value]}">{shown}</a>'
            cells.append(f'<td class="{("text long" if column in LONG_TEXT else "text") if column in text else ""}">{shown}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _capped(frame: pd.DataFrame, links: dict[str, str], where: str) -> str:
    shown = _table(frame.head(MAX_ROWS), links)
    if len(frame) > MAX_ROWS:
        shown += f"<p>... and {len(frame) - MAX_ROWS} more: all are in <code>{html.escape(where)}</code>.</p>"
    return shown


# --- the extra sections, remembered -------------------------------------------------------------
def remembered_sections(out: Path, extras: dict[str, Path] | None) -> dict[str, Path]:
    """The extra sections of every report written into ``out`` so far, with ``extras`` added (a title
    given again takes its new folder); kept in ``OUT/report.json``, folders relative to ``out`` so the
    whole tree can move."""
    from ..io.store import write_json_atomic

    out = Path(out)
    record = out / "report.json"
    sections: dict[str, str] = {}
    if record.is_file():
        try:
            sections = {s["title"]: s["folder"] for s in json.loads(record.read_text()).get("sections", [])}
        except (ValueError, KeyError, TypeError) as err:
            log.warning("%s unreadable (%s): its sections are forgotten", record, err)
    for title, folder in (extras or {}).items():
        sections[title] = os.path.relpath(Path(folder).resolve(), out.resolve())
    if sections or record.is_file():
        write_json_atomic({"sections": [{"title": t, "folder": f} for t, f in sections.items()]}, record)
    return {title: out / folder for title, folder in sections.items()}


def _extra_section(title: str, folder: Path) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    if not folder.is_dir():
        return parts[0] + f'<p class="bad">Folder <code>{html.escape(str(folder))}</code> is gone.</p>'
    for md in sorted(folder.glob("*.md")):
        parts.append(f"<pre>{html.escape(md.read_text())}</pre>")
    for png in sorted(folder.glob("*.png")):
        parts.append(f"<h3>{html.escape(png.stem)}</h3>{_png_file(png)}")
    return "".join(parts)


# --- QC pictures ----------------------------------------------------------------------------------
def qc_path(out: Path, scan_id: str) -> Path:
    return Path(out) / "qc" / f"{scan_id}.png"


def _scan_and_labels(out: Path, row):
    """The image (or, for a ``measure`` output, the mask itself) and the measured disc labels of one
    scan, both turned to LPS."""
    from ..io.scans import read_scan
    from ..io.store import read_mask_zarr
    from ..preprocess import to_canonical_orientation

    if (out / "run.json").is_file():
        image = to_canonical_orientation(read_scan(row.path))
        labels = to_canonical_orientation(read_mask_zarr(out / "masks.zarr", row.scan_id))
        return image.voxels, labels.voxels, image.spacing
    # A measure output keeps no masks: measure the mask again, as `measure` did, and draw it over itself.
    from ..config import Config
    from ..measure.instances import looks_binary
    from ..measure.scan import measure_mask

    try:
        marker = json.loads((out / "measure.json").read_text())
        cfg, scheme = Config.from_dict(marker["settings"]), marker.get("label_scheme")
    except (OSError, ValueError, KeyError, TypeError):
        cfg, scheme = Config(), None
    mask = read_scan(row.path, cfg.limits, check_voxels=False)
    measured = measure_mask(mask, cfg, binary=scheme is None and looks_binary(mask.voxels), scheme=scheme)
    labels = to_canonical_orientation(mask.with_voxels(measured.labels if measured.labels is not None else np.zeros(mask.shape, np.uint8)))
    mask = to_canonical_orientation(mask)
    return (np.asarray(mask.voxels) > 0).astype(np.float32) * 0.6, labels.voxels, mask.spacing


def write_qc_pictures(out: Path, scans: pd.DataFrame, discs: pd.DataFrame, chosen: list[str]) -> dict[str, str]:
    """``OUT/qc/<scan_id>.png`` for the chosen scans that have none yet; returns scan id -> its link
    (relative to the report) for every chosen scan that has a picture."""
    from ..runtime import map_here_or_on_ray

    out = Path(out)
    rows = scans[scans["status"] == ScanStatus.OK].drop_duplicates("scan_id").set_index("scan_id", drop=False)
    todo = [scan_id for scan_id in chosen if not qc_path(out, scan_id).is_file()]
    calls = [(out, rows.loc[scan_id], discs[discs["scan_id"] == scan_id]) for scan_id in todo]
    # After a run each picture (over half a second of matplotlib, up to 40 of them) is a task on its Ray.
    for scan_id, error in zip(todo, map_here_or_on_ray(draw_qc_picture, calls)):
        if error:  # an unreadable file or missing mask costs its picture, not the report
            log.warning("no QC picture for %s: %s", scan_id, error)
    return {scan_id: f"qc/{quote(scan_id)}.png" for scan_id in chosen if qc_path(out, scan_id).is_file()}


def draw_qc_picture(out: Path, row: pd.Series, mine: pd.DataFrame) -> str:
    """Draw one scan's QC picture to ``OUT/qc/<scan_id>.png``; returns why not ('' when drawn)."""
    names = dict(zip(mine["level"], qc.disc_names(mine)))
    # The statuses only: they are fixed when the scan is measured, while the plausibility notes
    # move with the archive (the report's table has them) and a picture drawn once would go stale.
    flags = {level: status for level, status in zip(mine["level"], mine["status"]) if status != "ok"}
    try:
        image, labels, spacing = _scan_and_labels(out, row)
    except Exception as err:  # noqa: BLE001 - reported by the caller, the other pictures go on
        return str(err)
    title = f"{row.scan_id} ({row.site})" if isinstance(row.site, str) else str(row.scan_id)
    save(qc.qc_figure(image, labels, spacing, title, names, flags), qc_path(out, row.scan_id), dpi=100, tight=False)  # it lays itself out
    return ""


# --- the page -------------------------------------------------------------------------------------
def write_report(out: Path, extras: dict[str, Path] | None = None, sample: int = 2, qc_limit: int = 40) -> Path:
    """Write ``OUT/report.html`` (see the module's docstring); ``extras`` adds sections (title ->
    folder of ``*.md`` and ``*.png``) to those remembered. ``sample`` QC pictures per site besides those
    of up to ``qc_limit`` suspicious scans."""
    from ..io.store import write_text_atomic

    out = Path(out)
    sections = remembered_sections(out, extras)
    scans = pd.read_parquet(out / "scans.parquet")
    discs = pd.read_parquet(out / "discs.parquet")
    discs["level_name"] = qc.disc_names(discs)
    if "n_discs" not in scans:  # a table made by hand: count the measured discs
        measured_per_scan = discs[discs["volume_mm3"].notna()].groupby("scan_id").size()
        scans["n_discs"] = scans["scan_id"].map(measured_per_scan).fillna(0).astype(int)
    discs["plausibility"] = implausible(discs)

    expected, odd_counts = qc.disc_count_warnings(scans)
    flagged = qc.flagged_discs(discs)
    suspicious = [*odd_counts["scan_id"], *flagged["scan_id"]]
    links = write_qc_pictures(out, scans, discs, qc.choose_qc_scans(scans, suspicious, sample, qc_limit))
    flag_columns = ["scan_id", "site", "level", "level_name", "status", "message", "plausibility"]
    write_text_atomic(flagged.reindex(columns=flag_columns).to_csv(index=False), out / "qc" / "flags.csv")  # header only: none

    parts = [f"<h1>rayspine report</h1><p>{len(scans)} scans, {len(discs)} discs, output folder <code>{html.escape(str(out.resolve()))}</code>.</p>"]
    warnings = []
    if len(odd_counts):
        warnings.append(f"{_count(len(odd_counts), 'scan')} with more or fewer discs than the usual {expected}")
    if len(flagged):
        warnings.append(f"{_count(len(flagged), 'flagged disc')}")
    if warnings:
        parts.append(f'<p class="bad">To look at: {html.escape(", ".join(warnings))} (below).</p>')

    parts.append("<h2>Scans by status and site</h2>")
    parts.append(_table(scans.pivot_table(index="site", columns="status", values="scan_id", aggfunc="count", fill_value=0).reset_index()))
    bad = scans[scans["status"] != ScanStatus.OK]
    if len(bad):
        parts.append('<h3 class="bad">Scans not scored</h3>' + _capped(bad[["scan_id", "site", "status", "message"]], links, "scans.parquet"))
    timing = scans.filter(like="seconds_").dropna(axis=1, how="all")
    if timing.shape[1]:
        parts.append("<h3>Seconds per stage</h3>" + _table(timing.describe().loc[["mean", "50%", "max"]].reset_index(names="stat")))

    parts.append(_disc_count_section(expected, odd_counts, discs, links))
    parts.append(_flag_section(discs, flagged, links, flag_columns))

    measured = discs[discs["status"] == "ok"]
    if len(measured):
        by_level = measured.groupby("level").agg(level_name=("level_name", "first"), n=("scan_id", "size"),
                                                 **{c: (c, "median") for c in geometry_columns()}).reset_index()  # fmt: skip
        parts.append("<h2>Disc geometry by level</h2>" + _png(level_distributions(measured)))
        parts.append("<p>Medians by level (discs of status ok):</p>" + _table(by_level))
        by_site = measured.groupby("site").agg(n=("scan_id", "size"), **{c: (c, "median") for c in geometry_columns()}).reset_index()
        parts.append("<h2>Disc geometry by site</h2>" + _png(site_distributions(measured)))
        parts.append("<p>Medians by site (all levels together):</p>" + _table(by_site))
    elif len(discs):  # nothing to plot, and matplotlib cannot draw a box plot of nothing
        counts = ", ".join(f"{k}: {v}" for k, v in discs["status"].value_counts().items())
        parts.append(f'<h2>Disc geometry by level</h2><p class="bad">No disc passed its checks ({html.escape(counts)}).</p>')

    parts.append(_gallery(scans, links, set(suspicious), with_images=(out / "run.json").is_file()))
    for title, folder in sections.items():
        parts.append(_extra_section(title, folder))

    page = (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>rayspine report</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    return write_text_atomic(page, out / "report.html")


def _disc_count_section(expected, odd: pd.DataFrame, discs: pd.DataFrame, links: dict[str, str]) -> str:
    head = "<h2>Discs per scan</h2>"
    if expected is None:
        return head + "<p>No scan was scored.</p>"
    if odd.empty:
        return head + f"<p>Every scored scan has {expected} discs.</p>"
    names = discs.sort_values("level").groupby("scan_id")["level_name"].agg(lambda s: ", ".join(reversed(list(s))))
    table = odd.assign(levels=odd["scan_id"].map(names).fillna(""))[["scan_id", "site", "n_discs", "expected", "levels"]]
    return (head + f'<p class="bad">{_count(len(odd), "scan")} with more or fewer discs than the archive\'s usual {expected} '
            "(a missed or an extra disc, two discs merged, a scan of another part of the spine):</p>"
            + _capped(table, links, "scans.parquet"))  # fmt: skip


def _flag_section(discs: pd.DataFrame, flagged: pd.DataFrame, links: dict[str, str], columns: list[str]) -> str:
    head = "<h2>Flagged discs</h2>"
    if discs.empty:
        return head + "<p>No disc.</p>"
    counts = discs.pivot_table(index="level_name", columns="status", values="scan_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(discs.sort_values("level").drop_duplicates("level")["level_name"])
    implausible_n = discs.groupby("level_name")["plausibility"].agg(lambda s: str(int((s != "").sum())))
    usable_n = discs[discs["status"].isin(USABLE_DISC_STATUSES)].groupby("level_name").size()
    judged = usable_n.reindex(counts.index).fillna(0) >= MIN_DISCS
    counts["implausible"] = implausible_n.reindex(counts.index).where(judged, f"not judged (< {MIN_DISCS} discs)")
    text = (head + "<p>Per level: discs by status (<code>fragments_dropped</code>: small pieces dropped, measured on the main one; "
            "<code>possibly_merged</code>: much larger than its neighbours; <code>too_large</code>: does not fit the crop; "
            f"<code>too_small</code>: not measured), and measurements implausible for the level (robust |z| &gt; {THRESHOLD:g} against the "
            "median and MAD of the archive's usable discs of that level, judged where it has at least "
            f"{MIN_DISCS}).</p>" + _table(counts.reset_index()))  # fmt: skip
    if flagged.empty:
        return text + "<p>No disc is flagged.</p>"
    return text + _capped(flagged.reindex(columns=columns), links, "qc/flags.csv")


def _gallery(scans: pd.DataFrame, links: dict[str, str], suspicious: set[str], with_images: bool = True) -> str:
    if not links:
        return "<h2>QC pictures</h2><p>None: no scored scan could be drawn.</p>"
    sites = scans.set_index("scan_id")["site"]
    figures = []
    for scan_id, link in sorted(links.items(), key=lambda item: item[0] not in suspicious):  # suspicious ones first
        note = " (flagged)" if scan_id in suspicious else ""
        caption = html.escape(f"{scan_id} ({sites.get(scan_id)}){note}")
        figures.append(f'<figure><a href="{link}"><img src="{link}" alt="QC {html.escape(scan_id)}"></a><figcaption>{caption}</figcaption></figure>')
    return ("<h2>QC pictures</h2><p>Mid-sagittal slice with each disc outlined and named, and the axial slice through each "
            "disc's centre; the flagged scans first, then a few per site. Files under <code>qc/</code>."
            + ("" if with_images else " A <code>measure</code> output has masks and no images: each mask is drawn over itself.")
            + f"</p><div class=\"gallery\">{''.join(figures)}</div>")  # fmt: skip
