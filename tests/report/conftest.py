"""Scored output folders made without Ray (the report reads only the folder) and a headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rayspine.config import Config
from rayspine.io.archive import index_archive
from rayspine.io.gradings import load_narrowing
from rayspine.io.outputs import claim_output, finish_tables, write_block_parts
from rayspine.io.scans import read_scan
from rayspine.io.store import write_mask_zarr
from rayspine.measure.command import measure_block
from rayspine.measure.scan import measure_mask, measured_count
from rayspine.synth import synthesize_archive

CFG = Config()


def scored_output(archive: Path, out: Path, drop: dict[str, int] | None = None) -> Path:
    """What `rayspine run` with a perfect segmenter leaves in ``out`` (tables, masks.zarr, run.json),
    scan by scan in this process; ``drop`` removes a disc level from a scan's mask (scan id -> level)."""
    claim_output(out, "run", CFG, overwrite=True)
    for row in index_archive(archive, use="images").to_dict("records"):
        mask = read_scan(row["mask_path"], check_voxels=False)
        if row["scan_id"] in (drop or {}):
            mask = mask.with_voxels(np.where(mask.voxels == 200 + drop[row["scan_id"]], 0, mask.voxels))
        measured = measure_mask(mask, CFG)
        write_mask_zarr(out / "masks.zarr", row["scan_id"], mask.with_voxels(measured.labels))
        scan = {**row, "path": row["image_path"], "status": measured.status, "message": measured.message}
        write_block_parts(out, [{**scan, "n_discs": measured_count(measured.rows), "seconds_load": 0.1, "disc_rows": measured.rows}], attempt=0)
    finish_tables(out, 0, {}, load_narrowing(archive / "radiological_gradings.csv"))
    return out


def measured_output(masks: list[Path], out: Path) -> Path:
    """What `rayspine measure` leaves for these mask files (measure_block is its Ray task's body)."""
    claim_output(out, "measure", CFG, overwrite=True)
    ids = [path.name.split(".")[0] for path in masks]
    measure_block([{"scan_id": i, "patient_id": i, "site": "ribeirao", "mask_path": str(p)} for i, p in zip(ids, masks)], str(out), CFG, attempt=1)
    finish_tables(out, 0, {}, None)
    return out


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory) -> Path:
    """22 small synthetic patients over 3 sites: over 20 discs per level, enough to judge plausibility."""
    root = tmp_path_factory.mktemp("archive")
    synthesize_archive(root, patients=22, sites=3, seed=5, size="small", overwrite=True)
    return root


# --- the browser ---------------------------------------------------------------------------------
def _install_chromium() -> tuple[str | None, str]:
    """Debian's chromium via apt-get (CI runs as root on a fresh clone): its path, or None and why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "not root, so apt-get cannot install it"
    if shutil.which("apt-get") is None:
        return None, "no apt-get (not a Debian-like system)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, f"`{' '.join(command)}` failed: {err}"
        if done.returncode != 0:
            return None, f"`{' '.join(command)}` exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
    found = shutil.which("chromium")
    return found, "" if found else "apt-get installed chromium but it is not on PATH"


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium on PATH, installed from Debian's packages when missing; the tests that need
    it are skipped, with the reason, where it is neither there nor installable."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        found, why = _install_chromium()
        if found is None:
            pytest.skip(f"no chromium on PATH and it could not be installed: {why}")
    return found


# A script appended to a copy of the page: once everything has loaded it writes what it measured into
# the page, which --dump-dom then prints.
CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const width = document.documentElement.clientWidth;
  const images = [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 80), loaded: i.complete && i.naturalWidth > 0,
                                                 natural: i.naturalWidth, shown: Math.round(i.getBoundingClientRect().width)}));
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect(); return r.right > width + 1 || r.left < -1; }).map(e => e.tagName.toLowerCase());
  const out = document.createElement('pre'); out.id = 'layout-check';
  out.textContent = JSON.stringify({clientWidth: width, scrollWidth: document.documentElement.scrollWidth, images, wide});
  document.body.appendChild(out);
});</script>"""


def _headless(chromium: str, url: str, width: int, height: int, *flags: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the pages are our own files.
    # --virtual-time-budget: the page's load event (every image decoded) and its script run before the dump.
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}", "--virtual-time-budget=15000", *flags, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def layout_of(chromium: str, page: Path, width: int = 1024) -> dict:
    """Load ``page`` in headless Chromium at ``width`` px and return, for every image, whether it loaded
    (naturalWidth > 0) and its shown width, the document's scrollWidth and clientWidth, and the
    elements that reach past the viewport."""
    page = Path(page).resolve()
    probe = page.with_name(f".{page.stem}-check.html")  # beside the page, so its relative links resolve
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    try:
        done = _headless(chromium, probe.as_uri(), width, 900, "--dump-dom")
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no layout check (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(chromium: str, page: Path, png: Path, width: int = 1280, height: int = 4000) -> Path:
    """A PNG of the page as a person sees it (for looking at, not for asserting on)."""
    _headless(chromium, Path(page).resolve().as_uri(), width, height, "--hide-scrollbars", f"--screenshot={Path(png).resolve()}")
    return png


@pytest.fixture(scope="session")
def synth_scored(synth_archive, tmp_path_factory) -> Path:
    """The synthetic archive scored (one scan, 7_t1, missing its L3/L4: 3 discs where 4 are usual),
    one L5/S1 given an impossible sagittal angle, and the report written."""
    from rayspine.report.html import write_report

    out = scored_output(synth_archive, tmp_path_factory.mktemp("scored") / "out", drop={"7_t1": 3})
    discs = pd.read_parquet(out / "discs.parquet")
    odd = discs.index[(discs.scan_id == "2_t1") & (discs.level == 1)]
    discs.loc[odd, "sagittal_angle_deg"] = 85.0
    discs.to_parquet(out / "discs.parquet", index=False)
    write_report(out)
    return out
