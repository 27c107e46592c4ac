"""Fixed video features for a distribution-level distance (docs/math.md §12).

No pretrained video network can be downloaded here (no model hub), so the project's distribution
metric uses a FIXED RANDOM 3-D convolutional network, documented and seeded, instead of I3D:

    frames resized to 64×64 (bilinear, antialiased), pixels in [-1, 1], shape [B, 3, F, 64, 64]
    conv3d 3→16,  kernel 3×3×3, stride (1, 2, 2), ReLU        -> 16 channels at 32×32
    conv3d 16→32, kernel 3×3×3, stride (1, 2, 2), ReLU        -> 32 channels at 16×16
    conv3d 32→64, kernel 3×3×3, stride (2, 2, 2), ReLU        -> 64 channels at  8×8, F/2 frames
    features = the spatio-temporal mean of every channel of the three layers (16 + 32 + 64 = 112),
               plus the same for the frame differences x_{f+1} − x_f fed through the same network
               (another 112: motion statistics), D = 224
Weights: Kaiming-normal (fan-in, ReLU gain) from torch.Generator seed 0, biases 0; frozen.

Random convolutional features respond to colour, contrast, edges/texture at three scales and to
temporal change, which is what separates a blurry or static few-step sample from its teacher. The
values are NOT comparable to published FVD numbers (which use I3D trained on Kinetics); with a local
I3D TorchScript file, `tdd_video.eval.fvd.I3DFeatures` plugs into the same Fréchet distance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

Tensor = torch.Tensor


class RandomVideoFeatures(nn.Module):
    """videos [B, F, 3, H, W] in [-1, 1] -> features [B, 224] (float64); see the module docstring."""

    def __init__(self, seed: int = 0, size: int = 64):
        super().__init__()
        self.size = size
        gen = torch.Generator().manual_seed(seed)
        specs = ((3, 16, (1, 2, 2)), (16, 32, (1, 2, 2)), (32, 64, (2, 2, 2)))
        self.convs = nn.ModuleList()
        for c_in, c_out, stride in specs:
            conv = nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=1)
            fan_in = c_in * 27
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False).eval()

    def _pooled(self, x: Tensor) -> Tensor:
        feats = []
        for conv in self.convs:
            x = F.relu(conv(x))
            feats.append(x.mean(dim=(2, 3, 4)))
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"videos must be [B, F, 3, H, W], got {tuple(videos.shape)}")
        b = videos.shape[0]
        x = rearrange(videos.float(), "b f c h w -> (b f) c h w")
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = rearrange(x, "(b f) c h w -> b c f h w", b=b)
        diff = x[:, :, 1:] - x[:, :, :-1] if x.shape[2] > 1 else torch.zeros_like(x)
        return torch.cat([self._pooled(x), self._pooled(diff)], dim=1).to(torch.float64)
