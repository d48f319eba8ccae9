"""Ray job: train the disc segmenter with Ray Train (one worker per GPU).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train_segmenter.py ARCHIVE MODEL_OUT [--test-site SITE] [--network swinunetr]
"""

import argparse
import json
import logging
from pathlib import Path

from rayspine.config import Config
from rayspine.io.remote import local_input, local_output
from rayspine.runtime import init_ray
from rayspine.segment import train_segmenter

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("archive")
parser.add_argument("out")
parser.add_argument("--test-site")
parser.add_argument("--network", help="swinunetr | segresnet | unet (default: swinunetr on GPU)")
parser.add_argument("--max-epochs", type=int)
parser.add_argument("--config", help="JSON file of config overrides, as for the rayspine CLI")
args = parser.parse_args()
base = Config.from_dict(json.loads(Path(args.config).read_text())) if args.config else Config()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

overrides = {"network": args.network, "max_epochs": args.max_epochs}
cfg = base.replace(seg={k: v for k, v in overrides.items() if v is not None})
init_ray()
with local_input(args.archive) as archive, local_output(args.out) as out:
    print(json.dumps(train_segmenter(archive, out, cfg, test_site=args.test_site), indent=2, default=str))
