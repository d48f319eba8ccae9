"""Ray job: score an archive (masks, geometry, latent features, report).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/score_archive.py ARCHIVE OUT --seg SEG_MODEL [--ae AE_MODEL]

ARCHIVE, OUT and the model folders may be paths on the cluster's shared mount or storage URIs.
"""

import argparse
import json
import logging
from pathlib import Path

from rayspine.config import Config
from rayspine.io.remote import local_input, local_output
from rayspine.pipeline import run_pipeline
from rayspine.runtime import init_ray

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("archive")
parser.add_argument("out")
parser.add_argument("--seg", required=True)
parser.add_argument("--ae")
parser.add_argument("--overwrite", action="store_true")
parser.add_argument("--config", help="JSON file of config overrides, as for the rayspine CLI")
args = parser.parse_args()
base = Config.from_dict(json.loads(Path(args.config).read_text())) if args.config else Config()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

init_ray()
with local_input(args.archive) as archive, local_input(args.seg) as seg, local_input(args.ae) as ae, local_output(args.out) as out:
    print(run_pipeline(archive, out, seg_dir=seg, ae_dir=ae, cfg=base, overwrite=args.overwrite))
