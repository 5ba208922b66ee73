"""Import model code that only needs the ONNX artifact in the run environment (no torch).

``scones evaluate`` runs the shipped ONNX model with onnxruntime, which ``.venv`` has. Its
helpers live in ``scones.model.build``, which imports the training and export modules
(torch, onnx) at module level although evaluation uses neither. Until those imports move into
``build_model``, :func:`import_without_training` stands in for the two modules while
``build`` is imported, where torch is not installed: anything that then touches training or
export says which environment it needs instead of failing on ``import torch``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

# The modules of scones.model that import torch or onnx at module level.
TRAINING_MODULES = ("scones.model.train", "scones.model.export")


class TrainingOnly(types.ModuleType):
    """A placeholder module: every attribute is a callable that explains where it runs."""

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        name = self.__name__

        def needs_training_environment(*_args: Any, **_kwargs: Any) -> Any:
            raise ModuleNotFoundError(
                f"{name}.{attribute} needs torch, which only the training environment has: "
                "run it with .venv-train/bin/python (scripts/bootstrap.sh train)",
                name="torch",
            )

        return needs_training_environment


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def import_without_training(module: str) -> types.ModuleType:
    """``importlib.import_module(module)``, without torch when torch is not installed."""
    if torch_installed():
        return importlib.import_module(module)
    placed = [name for name in TRAINING_MODULES if name not in sys.modules]
    for name in placed:
        sys.modules[name] = TrainingOnly(name)
    try:
        return importlib.import_module(module)
    finally:
        for name in placed:
            if isinstance(sys.modules.get(name), TrainingOnly):
                del sys.modules[name]
