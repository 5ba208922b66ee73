"""Which files in a folder of images are images, by name.

The training channels, the gate set and the reviewers' copies are folders of images
(``<label>/<name>``) that the retraining dataset step counts in S3 and the training and
evaluation code reads from disk: both ask this module, so a ``Thumbs.db`` or a README
is never an image to one and not to the other. No Pillow here: the dataset step's
function only lists keys.
"""

from __future__ import annotations

# The names a file of each format has in a folder of images (a training channel, the
# gate set, a reviewed copy): the first is the one a copy is given. A folder's other files
# (a manifest, Thumbs.db, a README) are not images, wherever they are counted.
FILE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "TIFF": (".tiff", ".tif"),
    "GIF": (".gif",),
    "HEIC": (".heic", ".heif", ".hif"),
}


# Why a file in a folder inside a label's folder is not read.
IN_A_SUBFOLDER = "only the files directly in a label's folder are read"


def is_image_file_name(name: str) -> bool:
    """Whether a file called ``name`` is one of a folder's images: an image suffix, and
    not hidden (macOS's ``._photo.png`` holds no image)."""
    return not_an_image_file_because(name) is None


def not_an_image_file_because(name: str) -> str | None:
    """Why a file called ``name`` is not one of a folder's images, in words for the
    people who put it there; None when it is one."""
    if name.startswith("."):
        return "a hidden file (its name starts with '.')"
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if not any(suffix in s for s in FILE_SUFFIXES.values()):
        return "not an image file by its name"
    return None
