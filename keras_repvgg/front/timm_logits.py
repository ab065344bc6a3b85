"""timm's logits for a checkpoint, in a process of their own: `python -m keras_repvgg.front.timm_logits
ARCH WEIGHTS CLASSES INPUTS.npy OUT.npy`.

`save_preset` measures a preset's fidelity to timm with this. It runs apart because torch
must be imported before TensorFlow (the other order crashes in triton's import), and the
caller has TensorFlow loaded. Needs torch and timm (not dependencies of keras-repvgg).
"""

from __future__ import annotations

import sys

import numpy as np


def timm_logits(arch: str, weights: str, classes: int, inputs: np.ndarray) -> np.ndarray:
    """timm's model `arch` with the checkpoint's weights (training form or fused), on NHWC inputs."""
    import timm
    import torch
    from safetensors.torch import load_file
    from timm.utils.model import reparameterize_model

    model = timm.create_model(arch, pretrained=False, num_classes=classes).eval()
    state = load_file(weights)
    if not any(".conv_kxk." in key for key in state):  # a fused checkpoint: load it into the fused form
        model = reparameterize_model(model)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2)))).numpy()


def main(argv: list[str]) -> int:
    arch, weights, classes, inputs, out = argv
    np.save(out, timm_logits(arch, weights, int(classes), np.load(inputs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
