"""How the training program divides a class's images, and so how few it can train on.

The training program holds out ``VALIDATION_FRACTION`` of each class for validation and
calibrates each of ``MEMBERS`` ensemble members on the others' folds of the rest. A
class too small for both cannot be trained on. The retraining dataset step applies the
same rule to the images it hands a training job, so a run that the training program
would refuse fails before the job is paid for, naming the class.
"""

from __future__ import annotations

VALIDATION_FRACTION = 0.2
MEMBERS = 4


def held_out_count(images: int, fraction: float) -> int:
    """Images of a class, of ``images``, held out for validation."""
    return round(fraction * images)


def split_refusal(
    images: int, fraction: float = VALIDATION_FRACTION, folds: int = MEMBERS
) -> str | None:
    """Why a class of ``images`` cannot be split and folded (to follow its name, as in
    ``"bicycle has 1 image, …"``), or None when it can."""
    held = held_out_count(images, fraction)
    count = f"{images} image" if images == 1 else f"{images} images"
    if held in (0, images):
        return f"has {count}, too few to hold out {fraction:.0%} for validation"
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
