"""Ray job: cross-validate disc-narrowing prediction (XGBoost; folds and feature sets in parallel).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/cross_validate.py DISCS_PARQUET CV_OUT [--labels GRADINGS_CSV]
"""

from common import job_parser, run_job

from rayspine.predict.command import run_cv


def arguments():
    parser = job_parser(__doc__)
    parser.add_argument("features")
    parser.add_argument("out")
    parser.add_argument("--labels")
    parser.add_argument("--leaky-folds", action="store_true", help="the paper's protocol: a patient's discs may span folds")
    return parser


def main(args):
    run_job(
        args,
        ["features", "labels"],
        "out",
        lambda cfg, features, labels, out: run_cv(features, out, cfg, labels=labels),
        overrides={"cv": {"group_by_patient": False if args.leaky_folds else None}},
    )


if __name__ == "__main__":
    main(arguments().parse_args())
