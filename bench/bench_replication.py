"""Replication of the paper's steps 2, 3 and 5 on the 190 real discs of ../shared (issue 14.5).

Runs the product's own commands on the real manual masks (``ribeirao_ivd_masks``: 38 people x 5 lumbar
discs, 0.43 x 0.43 x 4.4 mm), nothing else:

    rayspine measure MASKS -o WORK/measured
    rayspine train-ae WORK/measured -o WORK/sweep --bottleneck 64 8 4 3 [--paper-recipe] [--max-epochs N] [--max-minutes M]
    rayspine interpret --ae WORK/sweep/bn4 --features WORK/measured/discs.parquet -o WORK/interpret

then takes the table of the paper's claims beside ours (95 % intervals) that ``interpret`` writes
(``paper_claims.json``, ``rayspine.interpret.claims``) into ``WORK/replication.md`` and ``replication.json``
with the run's budget and wall time. The convergence claims are the paper's recipe's (``--paper-recipe``: up to
1000 epochs per size, hours on 2 CPU cores; ``tests/test_replication.py`` runs it behind ``-m slow``); the CLI's
default recipe (60 epochs) is the one measured best on unseen people, and gives the latents that users get.

    python bench/bench_replication.py [--work /tmp/replication] [--bottleneck 64 8 4 3] [--paper-recipe] [--max-epochs N] [--max-minutes M] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MASKS = ROOT.parent / "shared" / "data" / "ribeirao_ivd_masks" / "masks"


def rayspine(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rayspine.cli", *args], check=True, cwd=ROOT)


def run(work: Path, bottlenecks: list[int], max_epochs: int | None, max_minutes: float | None = None, config: Path | None = None,
        paper_recipe: bool = False) -> dict:
    started = time.perf_counter()
    measured, sweep, interpret = work / "measured", work / "sweep", work / "interpret"
    rayspine("measure", str(MASKS), "-o", str(measured), *(["--config", str(config)] if config else []))  # its discs section: the crops
    rayspine("train-ae", str(measured), "-o", str(sweep), "--bottleneck", *map(str, bottlenecks), *(["--max-epochs", str(max_epochs)] if max_epochs else []),
             *(["--max-minutes", str(max_minutes)] if max_minutes else []), *(["--config", str(config)] if config else []),
             *(["--paper-recipe"] if paper_recipe else []))
    model = sweep / ("bn4" if 4 in bottlenecks else json.loads((sweep / "default.json").read_text())["model"])
    rayspine("interpret", "--ae", str(model), "--features", str(measured / "discs.parquet"), "-o", str(interpret))
    # `interpret` wrote the claims beside its figures (paper_claims.json): the same table the report shows.
    result = json.loads((interpret / "paper_claims.json").read_text())
    result.update(wall_min=(time.perf_counter() - started) / 60, max_epochs=max_epochs, max_minutes=max_minutes, bottlenecks=bottlenecks, paper_recipe=paper_recipe,
                  config=json.loads(Path(config).read_text()) if config else {})
    (work / "replication.json").write_text(json.dumps(result, indent=2, default=float))
    (work / "replication.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    """The product's claims table (``rayspine.interpret.claims``) with this run's budget and wall time."""
    from rayspine.interpret.claims import claims_markdown

    budget = f"; at most {result['max_minutes']:g} min of training per size" if result.get("max_minutes") else ""
    budget += f"; config {json.dumps(result['config'])}" if result.get("config") else ""
    budget += "; the paper's recipe (`--paper-recipe`)" if result.get("paper_recipe") else "; the CLI's default recipe"
    return (claims_markdown(result, "190 real discs") + f"\nBottleneck interpreted: {result['bottleneck_interpreted']}; epochs at most "
            f"{result['max_epochs'] or 'the CLI default'}{budget}; wall {result['wall_min']:.1f} min.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/replication"))
    parser.add_argument("--bottleneck", type=int, nargs="+", default=[64, 8, 4, 3])
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="training-time budget per bottleneck (default none)")
    parser.add_argument("--config", type=Path, default=None, help="a rayspine config file for train-ae (default: none, the CLI's defaults)")
    parser.add_argument("--paper-recipe", action="store_true", help="train-ae --paper-recipe: the paper's training, to test its convergence claims")
    args = parser.parse_args()
    if not MASKS.is_dir():
        sys.exit(f"{MASKS} is absent: the replication needs ../shared/data/ribeirao_ivd_masks")
    result = run(args.work, args.bottleneck, args.max_epochs, args.max_minutes, args.config, args.paper_recipe)
    print((args.work / "replication.md").read_text())
    print(json.dumps({"wall_min": result["wall_min"]}))


if __name__ == "__main__":
    main()
