"""VGGish network in torch.

Layout follows the widely used torch ports: `features.{0,3,6,8,11,13}` convolutions and `embeddings.{0,2,4}` linears
(harritaylor/torchvggish). The port the benchmark used (tcvrick/audioset-vggish-tensorflow-to-pytorch,
`pytorch_vggish.pth`) names the linears `fc.{0,2,4}`; `canonical_state_dict` renames them, so both files load.

Final ReLU: the original slim definition (vggish_model.ckpt era, used by the benchmark's features) applied ReLU to the
128-d embedding; the current upstream definition and the TF-Hub google/vggish/1 SavedModel return it pre-activation.
The weights are the same, so this is a switch (`final_relu`) and not a different checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontend import EXAMPLE_FRAMES, N_MELS

EMBED_DIM = 128


def _vgg_stack() -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
        if v == "M":
            layers.append(
                nn.MaxPool2d(2, 2)
            )  # TF 'SAME' pooling == 'VALID' here: 96x64 halves exactly 4 times
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """log-mel examples [B, 96, 64] (or [B, 1, 96, 64]) -> embeddings [B, 128]."""

    def __init__(self, final_relu: bool = True):
        super().__init__()
        self.final_relu = final_relu
        self.features = _vgg_stack()  # [B,1,96,64] -> [B,512,6,4]
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBED_DIM),  # 'fc2' in TF; its ReLU is the `final_relu` switch
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        assert x.shape[1:] == (1, EXAMPLE_FRAMES, N_MELS), (
            f"expected [B,1,96,64] log-mel, got {tuple(x.shape)}"
        )
        x = self.features(x)  # [B, 512, 6, 4]
        # TF flattens NHWC; fc1's weight rows are in that order, so permute before flattening.
        x = x.permute(0, 2, 3, 1).flatten(1)  # [B, 12288]
        x = self.embeddings(x)  # [B, 128]
        return torch.relu(x) if self.final_relu else x


# TF variable scope (vggish_slim.define_vggish_slim) -> torch module, used by convert.py.
TF_TO_TORCH: dict[str, str] = {
    "vggish/conv1": "features.0",
    "vggish/conv2": "features.3",
    "vggish/conv3/conv3_1": "features.6",
    "vggish/conv3/conv3_2": "features.8",
    "vggish/conv4/conv4_1": "features.11",
    "vggish/conv4/conv4_2": "features.13",
    "vggish/fc1/fc1_1": "embeddings.0",
    "vggish/fc1/fc1_2": "embeddings.2",
    "vggish/fc2": "embeddings.4",
}


def canonical_state_dict(state: dict) -> dict:
    """Accept the `fc.*` naming of the tcvrick port (the benchmark's `pytorch_vggish.pth`) as `embeddings.*`."""
    if any(k.startswith("embeddings.") for k in state):
        return state
    return {("embeddings." + k[3:] if k.startswith("fc.") else k): v for k, v in state.items()}
