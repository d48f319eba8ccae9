"""All reading and writing of files lives in this package; the science modules never touch paths."""

from .archive import index_archive, read_overview
from .gradings import join_narrowing, narrowing_labels, read_gradings
from .scans import ScanError, read_scan, write_scan

__all__ = ["ScanError", "index_archive", "join_narrowing", "narrowing_labels", "read_gradings", "read_overview", "read_scan", "write_scan"]
