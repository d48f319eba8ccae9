"""What every job in this folder shares: arguments, config overrides, logging, URI staging, Ray.

A job script describes its arguments and calls ``run_job``; the command's own function does the work,
the same one ``rayspine`` calls on a laptop. Paths may be local, on the cluster's shared mount, or
object-storage URIs (``rayspine.io.remote`` stages them on the shared mount).
"""

from __future__ import annotations

import argparse
import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from rayspine.config import Config
from rayspine.io.remote import local_input, local_output
from rayspine.runtime import init_ray


def job_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job takes (``--config``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", help="JSON file of config overrides, as for the rayspine CLI")
    return parser


def run_job(args: argparse.Namespace, inputs: list[str], output: str, work: Callable, overrides: dict | None = None) -> None:
    """Stage ``args``' ``inputs`` (argument names; lists allowed) and ``output``, join Ray, then call
    ``work(cfg, **staged)`` with each argument's local path and print what it returns.

    ``overrides`` are config sections whose None values mean "keep the default", as on the CLI.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = Config.from_dict(json.loads(Path(args.config).read_text())) if args.config else Config()
    changed = {section: {k: v for k, v in fields.items() if v is not None} for section, fields in (overrides or {}).items()}
    cfg = cfg.replace(**{section: fields for section, fields in changed.items() if fields})
    init_ray()  # the cluster of RAY_ADDRESS under `ray job submit`, else a local Ray
    with ExitStack() as stack:
        staged = {}
        for name in inputs:
            value = getattr(args, name)
            if isinstance(value, list):
                staged[name] = [stack.enter_context(local_input(v)) for v in value]
            else:
                staged[name] = stack.enter_context(local_input(value))
        staged[output] = stack.enter_context(local_output(getattr(args, output)))
        result = work(cfg, **staged)
    print(result.to_string(index=False) if hasattr(result, "to_string") else json.dumps(result, indent=2, default=str))
