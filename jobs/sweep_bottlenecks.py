"""Ray job: train the disc autoencoder at several bottleneck sizes in parallel (Ray Tune).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sweep_bottlenecks.py SWEEP_OUT CROPS_DIR [CROPS_DIR ...] --bottleneck 64 8 4 3
"""

from common import job_parser, run_job

from rayspine.autoencode.sweep import run_sweep
from rayspine.config import ae_overrides


def arguments():
    parser = job_parser(__doc__)
    parser.add_argument("out")
    parser.add_argument("crops", nargs="+", help="output folders of `rayspine measure` or `rayspine run`")
    parser.add_argument("--bottleneck", type=int, nargs="+", help="sizes to sweep (default 64 8 4 3)")
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--model", help="registered autoencoder network (default conv)")
    parser.add_argument("--paper-recipe", action="store_true", help="the paper's training: constant rate, no augmentation, until IoU > 0.995")
    return parser


def main(args):
    run_job(
        args,
        ["crops"],
        "out",
        lambda cfg, crops, out: run_sweep(crops, out, cfg),
        overrides={"ae": ae_overrides(args.paper_recipe, bottlenecks=tuple(args.bottleneck) if args.bottleneck else None, max_epochs=args.max_epochs, model=args.model)},
    )


if __name__ == "__main__":
    main(arguments().parse_args())
