"""Cloud storage URIs (s3://, gs://, abfs://, hdfs://) for the cluster jobs.

Ray tasks on many nodes read scans and write per-scan outputs, so they work on a file system every
node sees: a cluster's shared mount (cluster.yaml mounts one at /mnt/shared). A job given URIs copies
its inputs from object storage into a scratch folder on that mount and copies its outputs back as
they are finished, failed run or not, so that a re-run resumes (pyarrow's file systems, so no extra
client is needed). Local paths pass through unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


def read_cluster_config(path: Path) -> dict:
    """An autoscaler's cluster config (YAML or JSON); {} when there is none or it cannot be read, and
    the caller sizes work from the live nodes."""
    import yaml  # JSON is YAML too

    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as err:
        log.warning("cluster config %s unreadable (%s): sizing from the live nodes only", path, err)
        return {}


def is_uri(path: str | os.PathLike | None) -> bool:
    return path is not None and "://" in str(path)


def scratch_root() -> Path:
    """Shared scratch: ``RAYSPINE_SCRATCH`` (set on the cluster to the shared mount), else the temp folder."""
    root = Path(os.environ.get("RAYSPINE_SCRATCH", tempfile.gettempdir())) / "rayspine-staging"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def local_input(path: str | None) -> Iterator[Path | None]:
    """A local path for an input: itself, or a fresh copy of the object-storage prefix it names."""
    if not is_uri(path):
        yield Path(path) if path else None
        return
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        target = Path(tmp) / Path(str(path).rstrip("/")).name
        source_fs, source = pafs.FileSystem.from_uri(str(path))
        if source_fs.get_file_info(source).type == pafs.FileType.File:
            pafs.copy_files(source, str(target), source_filesystem=source_fs)
        else:
            target.mkdir()
            pafs.copy_files(source, str(target), source_filesystem=source_fs)
        yield target


def _staged(path: Path) -> bool:
    """A file still being written: ``io.store.atomic_path``'s hidden ``.name.tmp-*`` (or inside one)."""
    return any(part.startswith(".") and ".tmp-" in part for part in path.parts)


def sync_to(local: Path, dest_fs, dest: str) -> int:
    """Copy every finished file of ``local`` that ``dest`` lacks or holds an older copy of; returns
    how many were copied. Half-written files are left for the next sync; nothing is deleted.

    On object stores each upload is atomic; on file systems (local, HDFS) a file is written under a
    temporary name and renamed, so a reader (or a resumed run) never sees half a file.
    """
    import pyarrow.fs as pafs

    listing = dest_fs.get_file_info(pafs.FileSelector(dest, recursive=True, allow_not_found=True))
    there = {Path(info.path).relative_to(Path(dest.rstrip("/"))).as_posix(): info for info in listing if info.type == pafs.FileType.File}
    atomic_rename = type(dest_fs).__name__ in {"LocalFileSystem", "HadoopFileSystem", "SubTreeFileSystem"}
    copied = 0
    for file in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        rel = file.relative_to(local)
        if _staged(rel):
            continue
        stat = file.stat()
        known = there.get(rel.as_posix())
        if known is not None and known.size == stat.st_size and known.mtime is not None and known.mtime.timestamp() >= stat.st_mtime:
            continue
        target = f"{dest.rstrip('/')}/{rel.as_posix()}"
        dest_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        written = f"{target.rsplit('/', 1)[0]}/.{rel.name}.tmp-sync" if atomic_rename else target
        with open(file, "rb") as source, dest_fs.open_output_stream(written) as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        if atomic_rename:
            dest_fs.move(written, target)
        copied += 1
    return copied


def _stage_for(uri: str) -> Path:
    """A staging folder of this destination's own on the shared scratch: a retried job (on any node
    seeing the mount) finds what the failed attempt wrote."""
    return scratch_root() / f"out-{hashlib.sha256(uri.encode()).hexdigest()[:16]}"


@contextmanager
def local_output(path: str, sync_every_s: float = 60.0) -> Iterator[Path]:
    """A local folder for an output. For a URI: a staging folder on the shared scratch, holding
    first whatever the destination already has (so a re-run resumes); finished files are copied to
    the destination every ``sync_every_s`` seconds while the block runs and once more when it ends,
    failed or not. A failed run's completed parts are therefore at the destination (each part is
    whole or absent, as in a local output folder), and the staging folder is kept for a retry; it is
    removed once a run succeeds.
    """
    if not is_uri(path):
        yield Path(path)
        return
    import pyarrow.fs as pafs

    dest_fs, dest = pafs.FileSystem.from_uri(str(path))
    target = _stage_for(str(path))
    target.mkdir(parents=True, exist_ok=True)
    if dest_fs.get_file_info(dest).type == pafs.FileType.Directory:
        for info in dest_fs.get_file_info(pafs.FileSelector(dest, recursive=True)):
            local = target / Path(info.path).relative_to(Path(dest.rstrip("/")))
            if info.type == pafs.FileType.File and not local.exists():
                local.parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(info.path, str(local), source_filesystem=dest_fs)
                if info.mtime is not None:  # as old as the destination's copy, so it is not sent back
                    os.utime(local, (info.mtime.timestamp(), info.mtime.timestamp()))
    dest_fs.create_dir(dest, recursive=True)  # object stores ignore this; local and HDFS need it

    stop = threading.Event()

    def keep_syncing() -> None:
        while not stop.wait(sync_every_s):
            try:
                sync_to(target, dest_fs, dest)
            except Exception as err:  # a flaky store must not end the run; the last sync says more
                log.warning("syncing %s to %s failed: %s", target, path, err)

    syncer = threading.Thread(target=keep_syncing, name="rayspine-output-sync", daemon=True)
    syncer.start()
    succeeded = False
    try:
        yield target
        succeeded = True
    finally:
        stop.set()
        syncer.join()
        copied = sync_to(target, dest_fs, dest)
        log.info("output %s: %d file(s) copied to %s%s", target, copied, path, "" if succeeded else " (run failed: progress kept)")
    shutil.rmtree(target, ignore_errors=True)
