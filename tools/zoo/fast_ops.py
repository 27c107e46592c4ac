"""CPU speed-up for temporal convolutions, numerically equivalent (no architecture change).

SVD's temporal layers (diffusers ``TemporalResnetBlock``, the VAE's ``TemporalDecoder``) use
``nn.Conv3d`` with kernel (k, 1, 1). On CPU, PyTorch runs those through its slow reference conv3d
(≈ 4× slower forward+backward than the same maths as a 2-D convolution with mkldnn, measured
here). ``fast_temporal_convs(module)`` rebinds the forward of every such Conv3d to the equivalent
``conv2d`` on [B, C, T, H·W]; weights, state dicts and outputs (to float rounding) are unchanged,
so saved models are plain diffusers models. Returns the number of convolutions patched.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


def _temporal_conv2d_forward(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """x [B, C, T, H, W] -> [B, C_out, T', H, W] via conv2d over (T, H·W) with kernel (k, 1)."""
    b, _, t, h, w = x.shape
    y = F.conv2d(x.reshape(b, x.shape[1], t, h * w), self.weight.squeeze(-1), self.bias,
                 stride=(self.stride[0], 1), padding=(self.padding[0], 0), dilation=(self.dilation[0], 1))
    return y.reshape(b, y.shape[1], y.shape[2], h, w)


def _is_temporal_conv(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv3d) and tuple(m.kernel_size[1:]) == (1, 1) and m.groups == 1
            and tuple(m.stride[1:]) == (1, 1) and tuple(m.dilation[1:]) == (1, 1)
            and isinstance(m.padding, tuple) and tuple(m.padding[1:]) == (0, 0) and m.padding_mode == "zeros")


def fast_temporal_convs(module: nn.Module) -> int:
    """Patch every (k,1,1) Conv3d inside `module` in place; returns how many were patched."""
    count = 0
    for m in module.modules():
        if _is_temporal_conv(m):
            m.forward = types.MethodType(_temporal_conv2d_forward, m)
            count += 1
    return count
