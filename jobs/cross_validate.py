"""Ray job: cross-validate disc-narrowing prediction (XGBoost; folds and feature sets in parallel).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/cross_validate.py DISCS_PARQUET CV_OUT [--labels GRADINGS_CSV]
"""

import argparse
import json
import logging
from pathlib import Path

from rayspine.classify import run_cv
from rayspine.config import Config
from rayspine.io.remote import local_input, local_output
from rayspine.runtime import init_ray

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("features")
parser.add_argument("out")
parser.add_argument("--labels")
parser.add_argument("--leaky-folds", action="store_true", help="the paper's protocol: a patient's discs may span folds")
parser.add_argument("--config", help="JSON file of config overrides, as for the rayspine CLI")
args = parser.parse_args()
base = Config.from_dict(json.loads(Path(args.config).read_text())) if args.config else Config()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

cfg = base.replace(cv={"group_by_patient": not args.leaky_folds})
init_ray()
with local_input(args.features) as features, local_input(args.labels) as labels, local_output(args.out) as out:
    print(run_cv(features, out, cfg, labels=labels).to_string(index=False))
