"""Pre-training the latent autoencoder on cached encoder states (reconstruction MSE).

Any documents serve: the AE sees only the encoder's output vectors, one token at a time, padding excluded. Of
them 10 % are held out, and the held-out MSE is what a trial reports. The "mlp" and "linear" kinds are trained with
Adam; "pca" is fitted in closed form (the top principal directions of the training vectors), then held out alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import Autoencoder

logger = logging.getLogger(__name__)


@dataclass
class AutoencoderResult:
    autoencoder: Autoencoder
    train_mse: list[float] = field(default_factory=list)  # per epoch
    heldout_mse: float = float("nan")  # after training, on the held-out 10 % of token vectors
    explained_variance: float | None = None  # PCA only: share of the training vectors' variance kept


def token_vectors(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(n, src_len, d) states → (tokens, d): the vectors of real tokens, padding dropped."""
    return states[attention_mask.bool()]


def pretrain_autoencoder(
    states: torch.Tensor,
    attention_mask: torch.Tensor,
    latent_dim: int,
    *,
    kind: str = "mlp",
    epochs: int = 8,
    learning_rate: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
) -> AutoencoderResult:
    """Trains (or, for "pca", fits) an `Autoencoder` (width → `latent_dim` → width) on encoder output vectors."""
    torch.manual_seed(seed)
    vectors = token_vectors(states, attention_mask).float()  # (tokens, d)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(vectors.shape[0], generator=generator)
    n_heldout = max(1, vectors.shape[0] // 10)
    heldout, train = vectors[order[:n_heldout]], vectors[order[n_heldout:]]
    ae = Autoencoder(vectors.shape[1], latent_dim, kind=kind)
    if kind == "pca":
        return _fit_pca(ae, train, heldout)
    optimizer = torch.optim.Adam(ae.parameters(), lr=learning_rate)
    result = AutoencoderResult(ae)
    for epoch in range(1, epochs + 1):
        ae.train()
        perm = torch.randperm(train.shape[0], generator=generator)
        total = 0.0
        for start in range(0, train.shape[0], batch_size):
            batch = train[perm[start : start + batch_size]]  # (batch, d)
            if batch.shape[0] < 2:
                continue  # BatchNorm needs two rows
            loss = F.mse_loss(ae(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.shape[0]
        result.train_mse.append(total / train.shape[0])
        logger.info("autoencoder epoch %d/%d: mse %.5f", epoch, epochs, result.train_mse[-1])
    ae.eval()
    with torch.no_grad():
        result.heldout_mse = F.mse_loss(ae(heldout), heldout).item()
    return result


@torch.no_grad()
def _fit_pca(ae: Autoencoder, train: torch.Tensor, heldout: torch.Tensor) -> AutoencoderResult:
    """Sets the linear AE to the top principal directions of `train`: encode = (x − mean) Vᵀ, decode = z V + mean."""
    latent = ae.spec["widths"][-1]
    if latent > train.shape[0]:
        raise ConfigError(
            f"PCA cannot find {latent} directions in {train.shape[0]} token vectors; lower latent_dim or encode more "
            "documents."
        )
    mean = train.mean(0)  # (d,)
    covariance = torch.cov((train - mean).T.double())  # (d, d)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    top = eigenvectors[:, -latent:].flip(-1).T.float()  # (latent, d), largest variance first
    encoder, decoder = ae.encoder[0], ae.decoder[0]
    assert isinstance(encoder, nn.Linear) and isinstance(decoder, nn.Linear)  # a linear kind: one Linear each way
    encoder.weight.copy_(top)
    encoder.bias.copy_(-top @ mean)
    decoder.weight.copy_(top.T)
    decoder.bias.copy_(mean)
    ae.eval()
    result = AutoencoderResult(ae, train_mse=[F.mse_loss(ae(train), train).item()])
    result.heldout_mse = F.mse_loss(ae(heldout), heldout).item()
    result.explained_variance = float(eigenvalues[-latent:].sum() / eigenvalues.sum().clamp_min(1e-12))
    return result
