"""The PANNs Cnn14 architecture (Kong et al. 2020), state-dict compatible with the official ``Cnn14_mAP=0.431.pth``.

Defined here rather than imported from panns_inference because importing that package runs a ``wget`` of
the label list; tests check that our parameter names and shapes equal panns_inference's own Cnn14.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cnn14_front import LogMel, PowerSpectrogram
from .cnn14_stft import SAMPLE_RATE

MEL_BINS, FMIN, FMAX, CLASSES = 64, 50, 14000, 527


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    # Inputs this narrow (in mel bins) or narrower are convolved without their padding's zero columns: the same
    # sums, a third fewer products at 2 bins (block 6) and a sixth at 4 (block 5). Set only for the int8 export
    # (onnx_runtime.py): there it measured 1.08-1.12x a batch, where float32 was no faster.
    unpadded_up_to = 0
    # Pool by a depthwise convolution whose taps are all 1/4: the same averages. Set only for the int8 export
    # (onnx_runtime.INT8_BLOCKS): ONNX Runtime's 8-bit average pool took 18 ms of a batch's 170 on an EPYC Zen 4,
    # its 8-bit depthwise convolution 4 ms for the same pools.
    pool_by_convolution = False

    def forward(self, x, pool_size=(2, 2)):
        x = self._conv_bn_relu(x, self.conv1, self.bn1)
        x = self._conv_bn_relu(x, self.conv2, self.bn2)
        if tuple(pool_size) == (1, 1):  # the last block's: nothing to average, and no op for the exporter to keep
            return x
        if self.pool_by_convolution:
            channels = self.conv2.out_channels  # not x.shape[1]: the exporter needs the taps' shape fixed
            taps = torch.full((channels, 1, *pool_size), 1 / (pool_size[0] * pool_size[1]), dtype=x.dtype)
            return F.conv2d(x, taps, stride=pool_size, groups=channels)
        return F.avg_pool2d(x, kernel_size=pool_size)

    def _conv_bn_relu(self, x, conv, bn):
        if self.training or not 2 <= x.shape[3] <= self.unpadded_up_to:
            return F.relu_(bn(conv(x)))
        # The batch norm folded into each part's weights and bias, as the exporter folds it into a whole convolution.
        weight, bias = fold_batch_norm(conv, bn)  # weight: (out, in, 3 frames, 3 bins), one zero bin either side
        parts = [F.conv2d(x[..., :2], weight[..., 1:], bias, padding=(1, 0))]  # the first bin: padding on its left
        if x.shape[3] > 2:
            parts.append(F.conv2d(x, weight, bias, padding=(1, 0)))  # the inner bins
        parts.append(F.conv2d(x[..., -2:], weight[..., :2], bias, padding=(1, 0)))  # the last: padding on its right
        return F.relu_(torch.cat(parts, dim=3))


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of one convolution that computes ``bn(conv(x))`` at inference."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


class Cnn14(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.device("cpu"):  # even when the rest is built on the meta device (see load_cnn14)
            self._build_front_end()
        self.bn0 = nn.BatchNorm2d(MEL_BINS)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048, bias=True)
        self.fc_audioset = nn.Linear(2048, CLASSES, bias=True)

    def _build_front_end(self):
        # Under torchlibrosa's names (panns_inference's front end), so the checkpoint's keys match. They are
        # filled in numpy, which the meta device refuses, and they are small.
        self.spectrogram_extractor = PowerSpectrogram()
        self.logmel_extractor = LogMel(SAMPLE_RATE, MEL_BINS, FMIN, FMAX)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) at 32 kHz -> (2048-d embeddings, 527 AudioSet class probabilities)."""
        return self.from_power(self.spectrogram_extractor(waveform))

    def from_power(self, power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything after the STFT, on (batch, 1, frames, 513) power spectra (cnn14_stft computes them)."""
        return self.classify(self.log_mel(power))

    def log_mel(self, power: torch.Tensor) -> torch.Tensor:
        """Power spectra -> normalised log-mel (batch, 1, frames, mels)."""
        x = self.logmel_extractor(power)
        return self.bn0(x.transpose(1, 3)).transpose(1, 3)

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolutions and dense layers, on the front end's output."""
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool_size=(2, 2) if i < 6 else (1, 1))
        return self.head(x)

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last block's feature map (batch, 2048, frames, bins) -> (embeddings, class probabilities)."""
        x = torch.mean(x, dim=3)
        x = torch.amax(x, dim=2) + torch.mean(x, dim=2)
        embedding = F.relu_(self.fc1(x))
        return embedding, torch.sigmoid(self.fc_audioset(embedding))
