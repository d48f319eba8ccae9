"""One typed configuration for the whole pipeline, with the paper's defaults.

Every stage takes the piece it needs (``cfg.grid``, ``cfg.seg`` ...). Nothing here reads files or the
environment: a config is built in code or from a JSON mapping (``Config.from_dict``), and its hash goes
into every table and model card so results can be traced to the settings that made them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

Spacing = tuple[float, float, float]


@dataclass(frozen=True)
class GridConfig:
    # Canonical grid every stage works on: patient orientation (ITK's LPS frame, so array axis 0 runs
    # right->left, 1 anterior->posterior, 2 inferior->superior) and voxel spacing in mm on those axes.
    orientation: str = "LPS"
    spacing_mm: Spacing = (1.4, 1.2, 1.5)  # the paper's resampling target


@dataclass(frozen=True)
class ScanLimits:
    # Header sanity limits, checked before any voxel is allocated.
    max_voxels: int = 1024**3  # a larger declared volume is refused as absurd
    max_dim: int = 4096  # per axis
    min_spacing_mm: float = 0.01
    max_spacing_mm: float = 50.0
    orthonormal_tol: float = 1e-3  # |D^T D - I| tolerance on the direction matrix


@dataclass(frozen=True)
class DiscConfig:
    crop_size: int = 64  # isotropic crop edge in voxels on the canonical grid (paper: 64^3)
    min_fragment_mm3: float = 150.0  # connected pieces smaller than this are dropped and flagged
    # Predicted (binary) masks: pieces smaller than this fraction of the largest piece are dropped and
    # flagged too. Lumbar discs of one spine differ by about 2x in volume (real T2 data: 0.55 smallest
    # to largest); 0.15 keeps them all even when the largest piece is two discs merged.
    min_fraction_of_largest: float = 0.15
    # A binary component larger than this multiple of the median disc volume is flagged as possibly
    # two discs touching (we never split silently).
    merged_volume_ratio: float = 1.8
    # How a disc mask is resampled onto the crop grid (measure/resampling.py): "slices" (shape-based
    # interpolation between the slices of the coarsest axis: no staircases from thick slices, the end
    # slices' extent kept), "nearest" neighbour, "distance" (3-D signed distance) or "linear". "slices"
    # by measurement: closest to the 1 mm annotation of the same discs, and the autoencoder reconstructs
    # unseen people best from it (bench/crop_resampling.md, bench/ae_heldout.md).
    crop_resampling: str = "slices"
    # The crop's axes (measure/crops.py): "scan" (the scan's axes, the paper's crop) or "disc_plane" (each
    # disc tilted flat, so the code need not hold its sagittal and coronal angles, which the geometry
    # table keeps; train-ae then turns training crops within the disc's plane only). On unseen real
    # people bottleneck 4 reconstructs aligned crops at IoU 0.817 against PCA-4's 0.801, the paper's
    # crops at 0.796 against 0.744 (bench/ae_heldout.md, sessions 15-16). The paper's crop stays the
    # default: its codes hold the tilt, which the paper's interpretation reads from them.
    crop_frame: str = "scan"
    # Levels of a binary mask (measure.instances): discs form a chain up the spine, each step between
    # neighbours running along their normals (within this angle) and about one disc-plus-vertebra long.
    chain_max_angle_deg: float = 35.0
    # The lowest piece of the chain is a sacral disc remnant (no level) when it is this small against the
    # discs above it, in volume and in lateral width; a full-width but thin one is a doubt (sacralised L5?).
    remnant_volume_fraction: float = 0.4
    remnant_width_fraction: float = 0.8
    # A disc whose level_confidence is below this makes its scan ``level_uncertain`` and is joined to no
    # narrowing grade, unless ``join_uncertain_levels`` (the user vouches for the numbering).
    min_level_confidence: float = 0.5
    join_uncertain_levels: bool = False

    def join_threshold(self) -> float:
        """The level_confidence a disc needs to be joined to a narrowing grade."""
        return 0.0 if self.join_uncertain_levels else self.min_level_confidence


@dataclass(frozen=True)
class SegConfig:
    # Network by name: "swinunetr" (SwinUNETR-V2, the paper's, default on GPU), "segresnet", "unet".
    network: str = "auto"  # auto: swinunetr when a GPU is present, unet on CPU (see nets.py)
    feature_size: int = 8  # width of the first stage; small keeps CPU training feasible (bench/segment.md)
    patch_size: tuple[int, int, int] = (64, 96, 96)  # training / sliding-window ROI on the canonical grid
    batch_size: int = 4  # paper
    learning_rate: float = 1e-3  # paper (Adam)
    max_epochs: int = 200
    patience: int = 15  # early stop after this many epochs without validation IoU gain (paper)
    bce_weight: float = 1.0  # BCE + Dice, equal weights (paper)
    dice_weight: float = 1.0
    # Weight of Kervadec's boundary loss (MONAI's BoundaryLoss: probabilities times the label's signed
    # distance, so a false voxel costs more the farther it lies from the outline) beside BCE + Dice.
    # 0: the paper's loss. On unseen real T2 people 0.1 gave Dice +0.007 (every person a little better),
    # 1.0 lost 0.12 (bench/segment.md, session 15): too little to change the paper's default.
    boundary_weight: float = 0.0
    # Fewer labelled patients than this (and no test site): k-fold cross-validation by patient, as
    # nnU-Net does; the test figures are out-of-fold, and the model shipped is a final fit on every
    # patient for the epochs the folds chose. 0: always one train / val / test split.
    cv_below_patients: int = 20
    cv_folds: int = 5  # at most one per patient
    # A fold with fewer non-test patients than this keeps none for early stopping: it trains on all of
    # them for max_epochs (the last averaged weights), as the final fit does. With three labelled
    # patients a validation patient would leave one to train on (bench/segment.md, session 6).
    cv_min_val_patients: int = 4
    test_fraction: float = 0.2  # by patient, when no test site is named and there is no cross-validation
    val_fraction: float = 0.2  # of the non-test patients, for early stopping
    samples_per_scan: int = 4  # random patches per scan and epoch, centred on discs 3 times in 4
    # Random zoom (1 +- scale) and sagittal tilt on half the training patches (0: none). On real T2,
    # validation Dice 0.80 -> 0.84 (bench/segment.md): patients and fields of view differ in size.
    augment_scale: float = 0.2
    augment_rotate_deg: float = 10.0
    # Validate, keep and ship an exponential moving average of the weights (0: the raw weights).
    # Batches of four make the raw weights jump: validation IoU swung by 0.05-0.08 from epoch to
    # epoch on real T2 (bench/segment.md), so the best-IoU pick was partly a pick of noise.
    ema_decay: float = 0.99
    # Partial-volume labels: each voxel of the network's grid learns the share of it the manual mask
    # covers (the 0/1 mask resampled linearly) instead of a nearest-neighbour 0 or 1. The labels lose
    # less on the way (1 mm real masks to this grid and back: Dice 0.99 as shares, 0.92-0.95 as 0/1),
    # but the networks trained on them were no better on unseen real T2 (out-of-fold Dice 0.826 vs
    # 0.834 and 0.795 vs 0.800, bench/segment.md, session 7), so 0/1 stays the default.
    soft_labels: bool = False
    # A segmenter folder whose weights start training (fine-tuning a model trained on another archive,
    # synthetic or real); it must have this network, grid and normalisation. "": random weights.
    init_from: str = ""
    sw_overlap: float = 0.25  # sliding-window overlap at inference
    # The network's arithmetic at inference (segment.infer.runs_in_bfloat16): "auto" is bfloat16 on a GPU
    # and on CPUs with bfloat16 matrix units (Intel AMX, AVX512-BF16), float32 on other CPUs; "gpu"
    # bfloat16 on a GPU only; or "float32" / "bfloat16" everywhere. On an AMX CPU bfloat16 takes the
    # network from 0.28 to 0.12 s per scan, held-out Dice within 0.0003 of float32's (bench/segment.md).
    inference_precision: str = "auto"
    # The same choice for training (autocast runs the network; Adam's weights and the loss stay float32).
    # "gpu", as before: on an AMX CPU bfloat16 makes a step 2.4x faster but real-T2 fits no faster (their
    # epochs are augmentation) and 0.003 lower on unseen people (bench/segment.md, session 17).
    train_precision: str = "gpu"
    threshold: float = 0.5
    max_minutes: float = 0.0  # training-time budget (0: none); the epoch that spends it is the last
    clip_percentiles: tuple[float, float] = (0.5, 99.5)  # robust intensity normalisation
    seed: int = 0


@dataclass(frozen=True)
class AEConfig:
    # The defaults are the recipe that reconstructs discs of people the model never saw best (5 folds by
    # person on 190 real discs, bench/ae_heldout.md): the paper's network, batch and rate, plus flips,
    # small turns and stretches of the training crops, a cosine decay of the rate over a fixed budget, and
    # the mask's probability threshold picked on the training crops after training.
    # ``PAPER_AE_RECIPE`` (``train-ae --paper-recipe``) is the paper's: a constant rate until the
    # eval-mode training IoU passes ``target_iou``, which on real discs fits the training people better
    # and unseen people no better.
    bottlenecks: tuple[int, ...] = (64, 8, 4, 3)  # the paper's sweep
    model: str = "conv"  # registered network (autoencode/networks/): the paper's convolutional autoencoder
    channels: tuple[int, ...] = (16, 32, 64, 128)  # encoder widths, 64^3 -> 4^3
    batch_size: int = 4  # paper
    learning_rate: float = 1e-3  # paper
    max_epochs: int = 60
    target_iou: float = 0.995  # converged when eval-mode training IoU exceeds this (paper)
    heldout_fraction: float = 0.0  # the paper reported training IoU only
    augment: bool = True  # random left-right flips of training crops
    # > 0: turn each training crop by up to this many degrees about each axis; three numbers give the
    # limit per crop axis (about the left-right, anterior-posterior and superior axes: the sagittal,
    # coronal and transverse angles of measure.geometry).
    augment_rotate_deg: float | tuple[float, float, float] = 10.0
    augment_scale: float = 0.1  # > 0: and stretch each axis by a factor of up to 1 +- this (augment.random_affine)
    lr_cosine: bool = True  # cosine decay of the learning rate to 0 over max_epochs (off: the paper's constant rate)
    calibrate_threshold: bool = True  # after training, the mask's probability threshold that fits the training crops best
    seed: int = 0
    # Added for the training loop (issue 5):
    eval_batch_size: int = 16  # crops per forward pass when scoring IoU in eval mode (no effect on results)
    channels_last: bool = True  # channels-last 3-D memory format: measured faster on CPU (bench/autoencoder.md)
    compile: bool = False  # torch.compile the training step (see bench/autoencoder.md for what it gives)
    amp: bool = True  # bfloat16 autocast on a GPU (ignored on CPU)
    checkpoint_seconds: float = 30.0  # at most this long of training is lost when a trial is interrupted
    precise_bn: bool = False  # before each eval, reset batch-norm running stats to whole-training-set averages
    lr_patience: int = 0  # 0: constant learning rate (paper); else halve it after this many epochs without a better IoU
    max_minutes: float = 0.0  # training-time budget per trial (0: none); when spent the run stops, not converged
    # For held-out evaluation by person (bench/ae_heldout.md); all off by default (none measured better).
    augment_shift: int = 0  # > 0: also roll each training crop by a random -n..n voxels along each axis
    weight_decay: float = 0.0  # > 0: AdamW with this decoupled weight decay instead of Adam
    val_patience: int = 0  # > 0 and validation crops given: stop after this many epochs without a better
    # mean validation IoU and return the weights of the best epoch
    eval_every: int = 1  # score IoU (convergence, held-out, validation) every n-th epoch and the last; 1: every epoch


# The paper's autoencoder training (`train-ae --paper-recipe`): a constant rate, no augmentation, until the
# eval-mode training IoU (masks at probability 0.5) passes target_iou or 1000 epochs. What the convergence claims are tested with.
PAPER_AE_RECIPE = {"max_epochs": 1000, "lr_cosine": False, "augment": False, "augment_rotate_deg": 0.0, "augment_scale": 0.0, "calibrate_threshold": False}


def ae_overrides(paper_recipe: bool = False, **flags) -> dict:
    """The ``ae`` section a command line asks for: the paper's recipe when asked, then the flags given
    (None: not given), so that ``--paper-recipe --max-epochs 350`` trains the paper's way for 350."""
    return {**(PAPER_AE_RECIPE if paper_recipe else {}), **{k: v for k, v in flags.items() if v is not None}}


@dataclass(frozen=True)
class CVConfig:
    max_depth: int = 3  # paper
    n_estimators: int = 200  # paper
    learning_rate: float = 0.1  # paper
    folds: int = 5  # paper
    group_by_patient: bool = True  # the paper let one patient's discs span folds; we do not by default
    n_bootstrap: int = 1000  # resamples for the 95% CI, by patient
    seed: int = 0


@dataclass(frozen=True)
class InterpretConfig:
    points: int = 6  # traversal points from min to max (paper)


@dataclass(frozen=True)
class PipelineConfig:
    # Model actor pools (runtime.plan_model_pools). A fixed size, or bounds for an autoscaling pool:
    # None as the top means one actor per GPU the cluster can grow to (its autoscaler's node types
    # count), or on CPUs as many as leave room for the read tasks.
    seg_actors: int | None = None  # fixed pool size (overrides the bounds)
    seg_actors_min: int = 1
    seg_actors_max: int | None = None
    encode_actors: int | None = None
    encode_actors_min: int = 1
    encode_actors_max: int | None = None
    # Custom resources each segmentation actor asks for, e.g. {"seg_slot": 1} with one slot per node
    # to place one actor on each node (the two-node test does): Ray's SPREAD is only a preference.
    seg_actor_resources: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1  # scans per segmentation call (scans differ in shape)
    block_scans: int = 200  # scans per Ray Data block, and per Parquet part of each table (bench/scale.md)
    task_memory_mb: int = 1024  # memory one CPU task (load, measure) reserves: what bounds how many run at once


@dataclass(frozen=True)
class ResourcesConfig:
    # GPUs on purpose: None asks for them when some node (live or launchable) has one; False never
    # does (a GPU cluster used for CPU work); True always does (node types the program cannot see).
    use_gpu: bool | None = None
    train_workers: int | None = None  # Ray Train workers; None: one per GPU the cluster can grow to, else one
    train_max_failures: int = 3  # Ray Train restarts the run from its last checkpoint this often (a lost node)


@dataclass(frozen=True)
class Config:
    grid: GridConfig = field(default_factory=GridConfig)
    limits: ScanLimits = field(default_factory=ScanLimits)
    discs: DiscConfig = field(default_factory=DiscConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    ae: AEConfig = field(default_factory=AEConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    interpret: InterpretConfig = field(default_factory=InterpretConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Short stable hash of the settings, written into tables and model cards."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a (partial) nested mapping; unknown keys are an error, not silently ignored."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        built = {}
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            built[f.name] = _replace_checked(default, data.get(f.name, {}))
        return cls(**built)

    def replace(self, **sections: Any) -> Config:
        """Copy with some fields of some sections changed: ``cfg.replace(ae={"max_epochs": 5})``."""
        return Config.from_dict({**self.to_dict(), **{k: {**self.to_dict()[k], **v} for k, v in sections.items()}})


def _replace_checked(section: Any, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(section)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {type(section).__name__} fields: {sorted(unknown)}")
    # JSON turns tuples into lists; keep the declared tuple types.
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return dataclasses.replace(section, **fixed)
