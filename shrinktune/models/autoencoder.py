"""The latent-space autoencoder of Falaki & Gras: compresses encoder hidden states so the decoder can be narrow.

Their AE stacks Linear → BatchNorm → ReLU blocks and ends the encoder half with Tanh at the latent, e.g.
768 → 576 → 480 → 384; the decoder half mirrors it. Their BatchNorm normalised over sequence positions, which forces
padding to a fixed length; ours normalises over features, so any sequence length works. Only the encoder half
(`Autoencoder.encoder`) goes into a student; the decoder half exists to train it.

Kinds (Falaki & Gras, MAKE 2023): "mlp" (the paper's AE), "linear" (one learnable linear layer, LL) and "pca" (a
linear layer holding the principal directions of the encoder states, fitted rather than trained).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrinktune.errors import ConfigError

AE_KINDS = ("mlp", "linear", "pca")
LINEAR_KINDS = ("linear", "pca")  # one Linear each way


class FeatureBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last (feature) dimension of a tensor of any rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # (..., features)
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)


def autoencoder_widths(width: int, latent: int, depth: int = 3) -> list[int]:
    """Layer widths from `width` down to `latent` in `depth` linear steps, evenly spaced (768, 640, 512, 384)."""
    if not 0 < latent <= width:
        raise ConfigError(f"latent width must be in 1..{width} (the encoder width), got {latent}.")
    if depth < 1:
        raise ConfigError(f"autoencoder depth must be ≥ 1, got {depth}.")
    return [round(width - (width - latent) * step / depth) for step in range(depth + 1)]


def _stack(widths: list[int], final: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers += [FeatureBatchNorm(n_out), nn.ReLU()]
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


def build_bottleneck(spec: dict) -> nn.Sequential:
    """The encoder half described by `spec` = {"kind": "mlp" | "linear" | "pca", "widths": [width, ..., latent]}."""
    kind, widths = spec.get("kind"), list(spec.get("widths", []))
    if kind not in AE_KINDS:
        raise ConfigError(f"bottleneck kind must be one of {AE_KINDS}, got {kind!r}.")
    if len(widths) < 2:
        raise ConfigError(f"bottleneck widths need at least [width, latent], got {widths}.")
    if kind in LINEAR_KINDS:
        return nn.Sequential(nn.Linear(widths[0], widths[-1]))
    return _stack(widths, nn.Tanh())


class Autoencoder(nn.Module):
    """Encoder half (width → latent) and mirrored decoder half (latent → width) for hidden states."""

    def __init__(self, width: int, latent: int, kind: str = "mlp", depth: int = 3):
        super().__init__()
        widths = autoencoder_widths(width, latent, depth) if kind == "mlp" else autoencoder_widths(width, latent, 1)
        self.spec: dict[str, Any] = {"kind": kind, "widths": widths}
        self.encoder = build_bottleneck(self.spec)
        self.decoder = nn.Sequential(nn.Linear(latent, width)) if kind in LINEAR_KINDS else _stack(widths[::-1], None)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(states))  # (..., width) → (..., latent) → (..., width)
