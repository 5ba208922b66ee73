"""Write tests/model/data/backbone_reference.json: the shipped backbone run by TensorFlow.js.

The test ``test_backbone_matches_tensorflow_js`` runs the same inputs through
``scones.model.tfjs_graph`` and compares. Needs Node.js and a folder where
``npm install @tensorflow/tfjs@4`` has run (pure JavaScript, no native build):

    .venv/bin/python scripts/backbone_reference.py --node-modules DIR/node_modules
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scones_core.training_split import TRAINED_INPUT_SIZE

from scones.model.artifact import decode_image, images_to_tensor
from scones.model.backbone import MOBILENETV3_COCO
from scones.model.networks import upsample

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "model" / "data" / "backbone_reference.json"
IMAGES = ("samples/bicycle", "samples/motorcycle")
RESIZE = 160


def backbone_input(png: Path) -> np.ndarray:
    """NCHW float32: the PNG decoded as the server does, upsampled as the classifier does."""
    pixels = images_to_tensor([decode_image(png.read_bytes())], TRAINED_INPUT_SIZE)
    scaled = torch.from_numpy(pixels) * MOBILENETV3_COCO.pixel_scale
    return upsample(scaled, RESIZE).numpy()  # as FineTunedBackbone.features does


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", type=Path, required=True)
    args = parser.parse_args()
    backbone = MOBILENETV3_COCO
    backbone.verify()
    entries = []
    with tempfile.TemporaryDirectory() as scratch:
        for folder in IMAGES:
            png = sorted((ROOT / folder).glob("*.png"))[0]
            nhwc = backbone_input(png).transpose(0, 2, 3, 1).astype("<f4")
            path = Path(scratch) / "input.bin"
            nhwc.tofile(path)
            result = subprocess.run(
                [
                    "node",
                    str(ROOT / "scripts" / "backbone_reference.mjs"),
                    str(backbone.directory / backbone.model_file),
                    backbone.feature_node,
                    str(path),
                    str(RESIZE),
                    str(RESIZE),
                ],
                env={**os.environ, "NODE_PATH": str(args.node_modules.resolve())},
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            output = json.loads(result.stdout.strip().splitlines()[-1])
            entries.append(
                {
                    "image": png.relative_to(ROOT).as_posix(),
                    "shape_nhwc": output["shape"],
                    "pooled": [float(f"{v:.7g}") for v in output["pooled"]],
                }
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "what": "TensorFlow.js 4 (CPU backend) output of the backbone, mean over H, W",
                "backbone": backbone.describe(),
                "resize": RESIZE,
                "images": entries,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
