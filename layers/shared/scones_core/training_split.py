"""How the training program divides a class's images, and so how few it can train on;
and the input size it trains models for.

The training program holds out ``VALIDATION_FRACTION`` of each class for validation and
calibrates each of ``MEMBERS`` ensemble members on the others' folds of the rest. A
class too small for both cannot be trained on. The retraining dataset step applies the
same rule to the images it hands a training job, so a run that the training program
would refuse fails before the job is paid for, naming the class. It counts objects by
name: a labelled image the training program cannot read is left out there, which can
still leave a class short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VALIDATION_FRACTION = 0.2
MEMBERS = 4
# The width and height of the images the training program's models take
# (``scones.model.build``). A stack whose ModelInputSize differs cannot serve a retrained
# candidate: the dataset step refuses such a run before its training job is paid for.
TRAINED_INPUT_SIZE = (32, 32)


def input_size_problem(served: tuple[int, int]) -> str | None:
    """Why a stack serving ``served`` (ModelInputSize) cannot retrain, or None."""
    if tuple(served) == TRAINED_INPUT_SIZE:
        return None
    trained = "x".join(map(str, TRAINED_INPUT_SIZE))
    return (
        f"retraining trains {trained} models, but the stack serves "
        f"{served[0]}x{served[1]} images (ModelInputSize): a candidate could not be "
        "judged against production nor served by this stack. Train and deploy models for "
        f"that size yourself, or serve {trained}"
    )


def held_out_count(images: int, fraction: float) -> int:
    """Images of a class, of ``images``, held out for validation."""
    return round(fraction * images)


@dataclass(frozen=True)
class TrainingSplit:
    """The validation share and ensemble members a run's training job uses: the training
    program's defaults unless its recipe says otherwise."""

    validation_fraction: float = VALIDATION_FRACTION
    members: int = MEMBERS

    @classmethod
    def parse(cls, value: Any) -> TrainingSplit:
        """From an event's ``{"validation_fraction": 0.2, "members": 4}`` (either may be
        left out); ``ValueError`` naming what is wrong."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(f"training_split must be an object, got {type(value).__name__}")
        unknown = sorted(set(value) - {"validation_fraction", "members"})
        if unknown:
            raise ValueError(f"training_split has unknown fields {unknown}")
        fraction = value.get("validation_fraction", VALIDATION_FRACTION)
        members = value.get("members", MEMBERS)
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not (0.0 < fraction < 1.0)
        ):
            raise ValueError(
                f"training_split.validation_fraction must be between 0 and 1, got {fraction!r}"
            )
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise ValueError(f"training_split.members must be a whole number >= 2, got {members!r}")
        return cls(float(fraction), members)

    def too_small(self, per_label: Mapping[str, int]) -> list[str]:
        """``"<label> <why>"`` for each class of ``per_label`` (images per label) too small
        to split and fold."""
        return [
            f"{label} {why}"
            for label, images in per_label.items()
            if (why := split_refusal(images, self.validation_fraction, self.members))
        ]


def split_refusal(
    images: int, fraction: float = VALIDATION_FRACTION, folds: int = MEMBERS
) -> str | None:
    """Why a class of ``images`` cannot be split and folded (to follow its name, as in
    ``"bicycle has 1 image, …"``), or None when it can."""
    held = held_out_count(images, fraction)
    count = f"{images} image" if images == 1 else f"{images} images"
    if held == 0:
        return f"has {count}, too few to hold out {fraction:.4g} of them for validation"
    if held == images:
        return (
            f"has {count}: holding out {fraction:.4g} of them for validation leaves none to "
            "train on"
        )
    if images - held < folds:
        return (
            f"has {count}: {held} held out for validation leaves {images - held}, "
            f"fewer than the {folds} folds the ensemble is calibrated on"
        )
    return None


def min_images_per_class(fraction: float = VALIDATION_FRACTION, folds: int = MEMBERS) -> int:
    """The fewest images of a class the training program can train on.

    The kept share never shrinks as a class grows (rounding moves it by at most one per
    image), so the first size that is accepted and every larger one are.
    """
    if not 0.0 < fraction < 1.0 or folds < 1:
        raise ValueError(f"no class size fits fraction {fraction} and {folds} folds")
    images = 1
    while split_refusal(images, fraction, folds) is not None:
        images += 1
    return images
