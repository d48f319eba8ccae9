"""Cloud storage URIs (s3://, gs://, abfs://, hdfs://) for the cluster jobs.

Ray tasks on many nodes read scans and write per-scan outputs, so they work on a file system every
node sees: a cluster's shared mount (cluster.yaml mounts one at /mnt/shared). A job given URIs copies
its inputs from object storage into a scratch folder on that mount and copies its outputs back when
done (pyarrow's file systems, so no extra client is needed). Local paths pass through unchanged.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


@contextmanager
def local_output(path: str) -> Iterator[Path]:
    """A local folder for an output; for a URI, whatever it already holds is fetched first (so a
    re-run resumes) and the folder is copied back when the block ends without error."""
    if not is_uri(path):
        yield Path(path)
        return
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        target = Path(tmp) / "out"
        target.mkdir()
        dest_fs, dest = pafs.FileSystem.from_uri(str(path))
        if dest_fs.get_file_info(dest).type == pafs.FileType.Directory:
            pafs.copy_files(dest, str(target), source_filesystem=dest_fs)
        yield target
        dest_fs.create_dir(dest, recursive=True)  # object stores ignore this; local and HDFS need it
        pafs.copy_files(str(target), dest, destination_filesystem=dest_fs)
