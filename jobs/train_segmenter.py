"""Ray job: train the disc segmenter with Ray Train (one worker per GPU).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train_segmenter.py ARCHIVE MODEL_OUT [--test-site SITE] [--network swinunetr]
"""

from common import job_parser, run_job

from rayspine.segment.command import train_segmenter


def arguments():
    parser = job_parser(__doc__)
    parser.add_argument("archive")
    parser.add_argument("out")
    parser.add_argument("--test-site")
    parser.add_argument("--network", help="swinunetr | segresnet | unet (default: swinunetr on GPU)")
    parser.add_argument("--max-epochs", type=int)
    return parser


def main(args):
    run_job(
        args,
        ["archive"],
        "out",
        lambda cfg, archive, out: train_segmenter(archive, out, cfg, test_site=args.test_site),
        overrides={"seg": {"network": args.network, "max_epochs": args.max_epochs}},
    )


if __name__ == "__main__":
    main(arguments().parse_args())
