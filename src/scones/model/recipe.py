"""The training recipe and augmentation settings, as plain data.

Kept free of torch so the CLI can show the defaults without importing it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scones_core.training_split import MEMBERS, VALIDATION_FRACTION


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the augmentations; zero switches one off."""

    crop_padding: int = 4
    flip: bool = True
    brightness: float = 0.25  # multiply by U(1-b, 1+b)
    contrast: float = 0.25
    saturation: float = 0.25
    erase_probability: float = 0.5
    erase_max_fraction: float = 0.35  # side of the erased square, as a share of the image side
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 1.0
    mix_probability: float = 0.5  # share of batches that are mixed (cutmix or mixup)


DEFAULT_LABELS: tuple[str, ...] = ("bicycle", "motorcycle")
"""The classes the prepared data holds and the shipped model answers, in its output order
(the template's ``ModelLabels`` default)."""


def model_name(labels: tuple[str, ...] | list[str]) -> str:
    """The name ``model.json`` gives a model trained without one: its labels in output
    order, joined by ``-`` (``bicycle-motorcycle`` for the shipped classes), so a model of
    other classes, retrained ones included, never carries the shipped model's name."""
    return "-".join(labels)


NETWORKS = ("mobilenetv3-coco", "efficientnet-lite2", "resnet")
"""``mobilenetv3-coco``: fine-tune the COCO-pretrained backbone (the default and the
shipped model). ``efficientnet-lite2``: fine-tune the ImageNet-pretrained EfficientNet-Lite2
(about 2.5x the time; the second teacher's members). ``resnet``: a small ResNet from
scratch, with no pretrained weights at all."""

RESNET_SETTINGS: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 64,
    "learning_rate": 0.05,
    "warmup_epochs": 5,
    "weight_decay": 5e-4,
    "dropout": 0.1,
}
"""Where the from-scratch ResNet's settings differ from the fine-tuning defaults."""

METHODS = ("distil", "ensemble")
"""``distil``: one student trained on a teacher ensemble's calibrated predictions over
augmented views (the default and the shipped model). ``ensemble``: the cross-fitted
ensemble of ``members`` networks trained on the labels (the teacher, and the model
shipped before the student)."""

QUANTISATIONS = ("none", "int8", "fp16")
"""How the exported graph's weights are stored: float32, int8 (onnxruntime static
quantisation, calibrated on training images) or float16 (half the file, the same
accuracy; no faster on a CPU without float16 arithmetic)."""

DEFAULT_METHOD = "distil"
"""What ``scones train`` trains without ``--recipe``: the recipe of the shipped model."""

DEFAULT_TEACHER = "models/reference/ensemble-v1"
"""The teacher artifact, relative to the project root: the ensemble shipped before."""

FRESH_TEACHER = "fresh"
"""``teacher`` value: train the teacher (the ensemble recipe, same epochs, resize, members
and seed) on the same images first, then distil from it. Retraining uses it, so images
labelled since the last model reach the student."""

DISTIL_SETTINGS: dict[str, Any] = {
    "method": "distil",
    "teacher": DEFAULT_TEACHER,
    "resize": 160,
    "epochs": 20,
    "flip_tta": False,
    "cross_fit": True,
}
"""Where the student's recipe differs from the ensemble's. ``epochs`` is also the number
of teacher-labelled augmented views of each image (one fresh view per epoch);
``members`` is the number of cross-fitted students used for calibration and
cross-validation."""

# Upper bounds of the recipe's sizes and counts: far above any useful value, and low
# enough that torch and numpy take them (a larger --seed, --threads or --resize fails
# deep inside them, the last only after the data is loaded).
MAX_SEED = 2**32 - 1
MAX_THREADS = 1024
MAX_RESIZE = 1024
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096

_RESNET_ONLY = frozenset({"width", "blocks_per_stage"})
_BACKBONE_ONLY = frozenset({"resize"})
_DISTIL_ONLY = frozenset({"teacher", "cross_fit", "hard_label_weight"})


def unused_by(network: str) -> frozenset[str]:
    """The recipe fields ``network`` has no use for, which a recipe for it refuses:
    ``resize`` for the from-scratch ResNet, ``width`` and ``blocks_per_stage`` for the
    pretrained backbones."""
    return _BACKBONE_ONLY if network == "resnet" else _RESNET_ONLY


@dataclass(frozen=True)
class TrainRecipe:
    """Every knob of a training run; recorded in ``model.json`` so a run can be repeated.

    The defaults fine-tune the pretrained backbone: AdamW, the head at
    ``learning_rate`` and the backbone at ``learning_rate * backbone_lr_scale`` (its
    weights are already good; a large step would wreck them), one warm-up epoch then
    cosine decay. ``TrainRecipe.for_network("resnet")`` gives the from-scratch recipe
    (SGD with Nesterov momentum, longer).
    """

    method: str = "ensemble"
    # distil: teacher artifact folder(s), relative to the project; several, comma-separated,
    # answer as one ensemble (see scones.model.distill.Teachers)
    teacher: str | None = None
    quantize: str = "none"
    seed: int = 0
    validation_fraction: float = VALIDATION_FRACTION
    members: int = MEMBERS
    network: str = "mobilenetv3-coco"
    resize: int = 160  # side the 32x32 image is upsampled to for the pretrained backbone
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    backbone_lr_scale: float = 0.1
    warmup_epochs: int = 1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    width: int = 48  # resnet only
    blocks_per_stage: int = 1  # resnet only
    dropout: float = 0.2
    flip_tta: bool = True
    calibrate_bias: bool = True  # fit a per-class bias with each member's temperature
    cross_fit: bool = False  # distil: a student per fold for out-of-fold numbers (slow)
    # distil: the share of the target that is the true label (mixed as the view was), the
    # rest the teacher's probabilities. The teacher saw every training image, so where it
    # is unsure of one the label still knows.
    hard_label_weight: float = 0.0
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def for_network(cls, network: str, method: str = "ensemble", **overrides: Any) -> TrainRecipe:
        """The default recipe of ``method`` and ``network``, with ``overrides`` (None values
        ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        wrong = sorted(unused_by(network).intersection(given))
        if wrong:
            raise ValueError(f"{' and '.join(wrong)}: not used by network {network}")
        if method != "distil" and (unused := sorted(_DISTIL_ONLY.intersection(given))):
            raise ValueError(f"{' and '.join(unused)}: only used by the distil method")
        settings: dict[str, Any] = {"network": network}
        if network == "resnet":
            settings.update(RESNET_SETTINGS)
        if method == "distil":
            settings.update(DISTIL_SETTINGS)
            if network == "resnet":
                settings.pop("resize")
        settings["method"] = method
        settings.update(given)
        return cls(**settings)

    def __post_init__(self) -> None:
        checks = {
            "members must be >= 2 (each member is calibrated on the others' folds)": self.members
            >= 2,
            f"epochs must be >= 1 and <= {MAX_EPOCHS}": 1 <= self.epochs <= MAX_EPOCHS,
            f"batch_size must be >= 2 and <= {MAX_BATCH_SIZE}": (
                2 <= self.batch_size <= MAX_BATCH_SIZE
            ),
            "learning_rate must be a finite number > 0": math.isfinite(self.learning_rate)
            and self.learning_rate > 0,
            "width must be >= 1": self.width >= 1,
            f"network must be one of {', '.join(NETWORKS)}": self.network in NETWORKS,
            f"method must be one of {', '.join(METHODS)}": self.method in METHODS,
            "the distil method needs a teacher": self.method != "distil" or bool(self.teacher),
            "teacher: each comma-separated folder must be named once, and "
            f"'{FRESH_TEACHER}' stands alone": self._teachers_well_formed(),
            f"quantize must be one of {', '.join(QUANTISATIONS)}": self.quantize in QUANTISATIONS,
            f"resize must be >= 32 and <= {MAX_RESIZE}": 32 <= self.resize <= MAX_RESIZE,
            "backbone_lr_scale must be in [0, 1]": 0 <= self.backbone_lr_scale <= 1,
            f"threads must be >= 1 and <= {MAX_THREADS}": 1 <= self.threads <= MAX_THREADS,
            f"seed must be >= 0 and <= {MAX_SEED}": 0 <= self.seed <= MAX_SEED,
            "validation_fraction must be in (0, 1)": 0 < self.validation_fraction < 1,
            "label_smoothing must be in [0, 1)": 0 <= self.label_smoothing < 1,
            "hard_label_weight must be in [0, 1]": 0 <= self.hard_label_weight <= 1,
        }
        problems = [message for message, ok in checks.items() if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    def _teachers_well_formed(self) -> bool:
        if not self.teacher:
            return True
        folders = self.teacher_folders
        return (
            all(folders)
            and len(set(folders)) == len(folders)
            and (FRESH_TEACHER not in folders or len(folders) == 1)
        )

    @property
    def teacher_folders(self) -> tuple[str, ...]:
        """The teacher artifact folders ``teacher`` names, in order (empty for none)."""
        if not self.teacher:
            return ()
        return tuple(part.strip() for part in self.teacher.split(","))

    def teacher_recipe(self) -> TrainRecipe:
        """The ensemble a fresh teacher is trained with: this recipe's shared settings."""
        return replace(
            self,
            method="ensemble",
            teacher=None,
            flip_tta=True,
            cross_fit=False,
            hard_label_weight=0.0,
            quantize="none",
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_arguments(cls, args: Any) -> TrainRecipe:
        """The recipe from parsed ``--network --seed --epochs ...`` options (the CLI and
        the SageMaker entry point share these option names; None means the network's
        default)."""
        return cls.for_network(
            args.network,
            getattr(args, "recipe", None) or DEFAULT_METHOD,
            teacher=getattr(args, "teacher", None),
            quantize=getattr(args, "quantize", None),
            seed=args.seed,
            epochs=args.epochs,
            members=args.members,
            resize=args.resize,
            width=args.width,
            blocks_per_stage=args.blocks,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            validation_fraction=args.validation_fraction,
            threads=args.threads,
            flip_tta=getattr(args, "flip_tta", None),
            cross_fit=getattr(args, "cross_fit", None),
            hard_label_weight=getattr(args, "hard_label_weight", None),
        )
