"""Direction-aware linear autoencoder over the rows of a token-embedding table.

Paper: Bałazy et al., "Direction is what you need: improving word embedding compression in large language
models" (https://arxiv.org/abs/2106.08181); maths, defaults and pitfalls in METHODS.md §3(b)–(c), (f)
(official code: ``main.py``, ``losses/*.py``, ``models/auto_encoder.py``).

Each vocabulary row ``x_i ∈ R^d`` is one training example::

    z_i = W_e x_i + b_e        (k,)        encoder  d -> k
    x̂_i = W_d z_i + b_d        (d,)        decoder  k -> d

    L = (c_cos / s_div) · mean_i [1 − cos(x̂_i, x_i)]            cosine (direction) distance, eps 1e-6
      + c_L1 · mean_ij (|x̂_ij − x_ij| + 1e-10)^α(t)              "powered" L1, α annealed per epoch
      + c_L2 · sqrt(mean_ij (x̂_ij − x_ij)²)                      RMSE

    α(t) = α_start − (α_start − α_end) · t / T   for epoch t < T, α_end afterwards

After training only the code table ``Z = E W_eᵀ + b_e`` ``(V, k)`` and the decoder are kept (the deployed
:class:`~slimformer.embeddings.factorized.FactorizedEmbedding`). The effective cosine weight is
``c_cos / s_div = 0.1995`` with the defaults (§3(f)3). Checkpoint selection: the official code keeps the epoch with
the lowest perplexity *on the test set* (§3(f)1); we keep the last epoch, so no evaluation data is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from slimformer.embeddings.svd import svd_factorize
from slimformer.errors import ConfigError

__all__ = ["AutoencoderConfig", "LinearAutoencoder", "autoencoder_loss", "alpha_at", "train_autoencoder", "AEResult"]


class AutoencoderConfig(BaseModel):
    """Training settings of the embedding autoencoder (defaults: METHODS.md §3(c), the official ``config.yaml``).

    Unknown keys and out-of-range values raise ``pydantic.ValidationError`` naming the field (recipes turn it into
    a one-line ``ConfigError``).

    Attributes:
        epochs: epochs with the annealed exponent ``α`` (``T_change``).
        extra_epochs: further epochs with ``α = alpha_end``.
        batch_size: vocabulary rows per step.
        learning_rate: Adam learning rate.
        lr_step_epochs, lr_gamma: StepLR schedule (halve every 4 epochs).
        cos_weight, cos_div: cosine term weight ``c_cos`` and divisor ``s_div`` (effective ``c_cos / s_div``).
        l1_weight: weight ``c_L1`` of the powered L1 term.
        l2_weight: weight ``c_L2`` of the RMSE term.
        alpha_start, alpha_end: exponent of the L1 term at epoch 0 and from epoch ``epochs`` on.
        anneal_alpha: if False, ``α = alpha_start`` throughout (plain L1 with the default 1.0).
        svd_init: initialise ``W_e = V_kᵀ``, ``W_d = V_k``, biases 0 (official option, off by default).
        seed: seed of the initialisation and of the row shuffling.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(20, ge=1)
    extra_epochs: int = Field(10, ge=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_step_epochs: int = Field(4, ge=1)
    lr_gamma: float = Field(0.5, gt=0, le=1)
    cos_weight: float = Field(0.9975, ge=0)
    cos_div: float = Field(5.0, gt=0)
    l1_weight: float = Field(0.0025, ge=0)
    l2_weight: float = Field(0.0, ge=0)
    alpha_start: float = Field(1.0, gt=0)
    alpha_end: float = Field(0.1, gt=0)
    anneal_alpha: bool = True
    svd_init: bool = False
    seed: int = 1

    @model_validator(mode="after")
    def _some_loss(self) -> AutoencoderConfig:
        if self.cos_weight == self.l1_weight == self.l2_weight == 0:
            raise ValueError("cos_weight, l1_weight and l2_weight are all 0; expected at least one loss term")
        return self


class LinearAutoencoder(nn.Module):
    """``x -> W_d (W_e x + b_e) + b_d``: a linear autoencoder ``d -> k -> d`` (both layers with bias).

    Args:
        dim: row size ``d`` of the embedding table.
        rank: latent size ``k``.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        if not 0 < rank < dim:
            raise ConfigError(f"rank {rank} is invalid for hidden size {dim}; expected 1 <= rank < {dim}")
        self.encoder = nn.Linear(dim, rank)  # W_e (k, d), b_e (k,)
        self.decoder = nn.Linear(rank, dim)  # W_d (d, k), b_d (d,)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct rows: ``(B, d) -> (B, d)``."""
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def init_from_svd(self, table: Tensor) -> None:
        """SVD initialisation (§3(b)): ``W_e = V_kᵀ``, ``W_d = V_k``, biases 0, from a table ``(V, d)``."""
        _, v_t = svd_factorize(table, self.encoder.out_features)  # (k, d)
        self.encoder.weight.copy_(v_t)
        self.decoder.weight.copy_(v_t.T)
        self.encoder.bias.zero_()
        self.decoder.bias.zero_()


def alpha_at(epoch: int, config: AutoencoderConfig) -> float:
    """Exponent ``α(t)`` of the powered L1 term at 0-based ``epoch`` (linear from alpha_start to alpha_end)."""
    if not config.anneal_alpha:
        return config.alpha_start
    if epoch >= config.epochs:
        return config.alpha_end
    return config.alpha_start - (config.alpha_start - config.alpha_end) * epoch / config.epochs


def autoencoder_loss(recon: Tensor, target: Tensor, config: AutoencoderConfig, alpha: float) -> Tensor:
    """The AE objective (module docstring) for a batch of rows.

    Args:
        recon: reconstructed rows ``x̂``, shape ``(B, d)``.
        target: original rows ``x``, shape ``(B, d)``.
        config: loss weights.
        alpha: exponent of the powered L1 term for this epoch.

    Returns:
        Scalar loss.
    """
    loss = recon.new_zeros(())
    if config.cos_weight:
        cos = nn.functional.cosine_similarity(recon, target, dim=-1, eps=1e-6)  # (B,)
        loss = loss + config.cos_weight / config.cos_div * (1 - cos).mean()
    diff = recon - target  # (B, d)
    if config.l1_weight:
        loss = loss + config.l1_weight * (diff.abs() + 1e-10).pow(alpha).mean()
    if config.l2_weight:
        loss = loss + config.l2_weight * diff.pow(2).mean().sqrt()
    return loss


@dataclass
class AEResult:
    """A trained autoencoder's deployable parts and its training trace.

    Attributes:
        codes: code table ``Z = E W_eᵀ + b_e``, shape ``(V, k)``.
        decoder_weight: ``W_d``, shape ``(d, k)``.
        decoder_bias: ``b_d``, shape ``(d,)``.
        epoch_losses: mean training loss per epoch.
    """

    codes: Tensor
    decoder_weight: Tensor
    decoder_bias: Tensor
    epoch_losses: list[float]


def train_autoencoder(
    table: Tensor, rank: int, config: AutoencoderConfig | None = None, *, progress: bool = False
) -> AEResult:
    """Train the linear autoencoder on the rows of ``table`` (CPU, float32, seeded).

    Args:
        table: embedding table ``E``, shape ``(V, d)``; not modified.
        rank: latent size ``k``, ``1 <= k < d``.
        config: training settings (default :class:`AutoencoderConfig()`).
        progress: show a tqdm bar over epochs.

    Returns:
        The code table, decoder and per-epoch losses (:class:`AEResult`).

    Raises:
        ConfigError: ``table`` is not 2-D or the rank is out of range.
    """
    config = config or AutoencoderConfig()
    if table.dim() != 2:
        raise ConfigError(f"embedding table has shape {tuple(table.shape)}; expected (vocab, dim)")
    data = table.detach().to(torch.float32).clone()  # (V, d)
    vocab, dim = data.shape
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        ae = LinearAutoencoder(dim, rank)
    if config.svd_init:
        ae.init_from_svd(data)
    opt = torch.optim.Adam(ae.parameters(), lr=config.learning_rate)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
    total = config.epochs + config.extra_epochs
    from tqdm.auto import tqdm

    losses: list[float] = []
    bar = tqdm(range(total), desc=f"embedding AE k={rank}", disable=not progress)
    for epoch in bar:
        alpha = alpha_at(epoch, config)
        order = torch.randperm(vocab, generator=gen)
        running, steps = 0.0, 0
        for start in range(0, vocab, config.batch_size):
            rows = data[order[start : start + config.batch_size]]  # (B, d)
            loss = autoencoder_loss(ae(rows), rows, config, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running, steps = running + loss.item(), steps + 1
        sched.step()
        losses.append(running / steps)
        bar.set_postfix(loss=f"{losses[-1]:.5f}", alpha=f"{alpha:.3f}")
    with torch.no_grad():
        codes = ae.encoder(data)  # (V, d) -> (V, k)
    return AEResult(
        codes=codes.to(table.dtype),
        decoder_weight=ae.decoder.weight.detach().clone().to(table.dtype),
        decoder_bias=ae.decoder.bias.detach().clone().to(table.dtype),
        epoch_losses=losses,
    )
