"""The model of this scenario: a small CNN for scikit-learn's 8x8 digits images.

``mserve convert`` rebuilds it from this module (``--factory digits_cnn:make_cnn``) and loads
the trained weights from a state_dict checkpoint into it; channel pruning needs the Python
module, not only a traced program. Keep this file importable without side effects.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and two linear layers: (N, 1, 8, 8) -> (N, 10)
    class scores (logits)."""

    def __init__(self, channels: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * channels * 4 * 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the ten digits for a batch of images scaled to [0, 1]."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def make_cnn() -> nn.Module:
    """The untrained architecture, as ``mserve convert --factory`` calls it (no arguments)."""
    return DigitsCNN()
