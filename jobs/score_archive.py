"""Ray job: score an archive (masks, geometry, latent features, report).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/score_archive.py ARCHIVE OUT --seg SEG_MODEL [--ae AE_MODEL]

ARCHIVE, OUT and the model folders may be paths on the cluster's shared mount or storage URIs.
"""

from common import job_parser, run_job

from rayspine.pipeline.graph import run_pipeline


def arguments():
    parser = job_parser(__doc__)
    parser.add_argument("archive")
    parser.add_argument("out")
    parser.add_argument("--seg", required=True)
    parser.add_argument("--ae")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(args):
    run_job(
        args,
        ["archive", "seg", "ae"],
        "out",
        lambda cfg, archive, seg, ae, out: run_pipeline(archive, out, seg_dir=seg, ae_dir=ae, cfg=cfg, overwrite=args.overwrite),
    )


if __name__ == "__main__":
    main(arguments().parse_args())
