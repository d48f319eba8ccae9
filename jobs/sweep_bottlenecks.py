"""Ray job: train the disc autoencoder at several bottleneck sizes in parallel (Ray Tune).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sweep_bottlenecks.py SWEEP_OUT CROPS_DIR [CROPS_DIR ...] --bottleneck 64 8 4 3
"""

import argparse
import json
import logging
from pathlib import Path
from contextlib import ExitStack

from rayspine.config import Config
from rayspine.io.remote import local_input, local_output
from rayspine.runtime import init_ray
from rayspine.sweep import run_sweep

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("crops", nargs="+", help="output folders of `rayspine measure` or `rayspine run`")
parser.add_argument("--bottleneck", type=int, nargs="+", help="sizes to sweep (default 64 8 4 3)")
parser.add_argument("--max-epochs", type=int)
parser.add_argument("--config", help="JSON file of config overrides, as for the rayspine CLI")
args = parser.parse_args()
base = Config.from_dict(json.loads(Path(args.config).read_text())) if args.config else Config()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

overrides = {"bottlenecks": args.bottleneck, "max_epochs": args.max_epochs}
cfg = base.replace(ae={k: v for k, v in overrides.items() if v is not None})
init_ray()
with ExitStack() as stack:
    crops = [stack.enter_context(local_input(c)) for c in args.crops]
    out = stack.enter_context(local_output(args.out))
    print(run_sweep(crops, out, cfg).to_string(index=False))
