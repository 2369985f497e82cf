"""The embedding autoencoder (METHODS §3(b)): loss terms, α schedule, SVD init, training vs SVD."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from slimformer.embeddings import AutoencoderConfig, LinearAutoencoder, autoencoder_loss, svd_factorize
from slimformer.embeddings.autoencoder import alpha_at, train_autoencoder
from slimformer.errors import ConfigError


def _low_rank(v: int = 200, d: int = 16, r: int = 4, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(v, r, generator=g) @ torch.randn(r, d, generator=g) + noise * torch.randn(v, d, generator=g)


def test_loss_terms_match_hand_computation() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # row 0: cos = 1/sqrt(2); row 1: cos = 1. |diff| = [[0,1],[0,1]]
    cos_term = (1 - 1 / math.sqrt(2) + 0) / 2
    only_cos = AutoencoderConfig(cos_weight=1.0, cos_div=4.0, l1_weight=0.0, l2_weight=0.0)
    assert autoencoder_loss(r, x, only_cos, 1.0).item() == pytest.approx(cos_term / 4.0, rel=1e-6)
    only_l1 = AutoencoderConfig(cos_weight=0.0, l1_weight=2.0, l2_weight=0.0)
    powered = (2 * (1e-10) ** 0.5 + 2 * (1 + 1e-10) ** 0.5) / 4  # α = 0.5
    assert autoencoder_loss(r, x, only_l1, 0.5).item() == pytest.approx(2.0 * powered, rel=1e-6)
    only_l2 = AutoencoderConfig(cos_weight=0.0, l1_weight=0.0, l2_weight=3.0)
    assert autoencoder_loss(r, x, only_l2, 1.0).item() == pytest.approx(3.0 * math.sqrt(2 / 4), rel=1e-6)


def test_default_effective_cosine_weight_is_0_1995() -> None:
    cfg = AutoencoderConfig()
    assert cfg.cos_weight / cfg.cos_div == pytest.approx(0.1995)


def test_alpha_is_annealed_linearly_then_fixed() -> None:
    cfg = AutoencoderConfig(epochs=4, extra_epochs=2, alpha_start=1.0, alpha_end=0.2)
    assert [alpha_at(t, cfg) for t in range(6)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2])
    assert alpha_at(3, AutoencoderConfig(anneal_alpha=False, alpha_start=0.7)) == 0.7


def test_svd_init_reproduces_svd_reconstruction() -> None:
    e = _low_rank()
    ae = LinearAutoencoder(16, 3)
    ae.init_from_svd(e)
    codes, dec = svd_factorize(e, 3)
    torch.testing.assert_close(ae(e), codes @ dec, atol=1e-4, rtol=0)


def test_l2_only_autoencoder_approaches_svd_error() -> None:
    e = _low_rank(noise=0.01)
    codes, dec = svd_factorize(e, 4)
    svd_err = (codes @ dec - e).norm() / e.norm()
    cfg = AutoencoderConfig(
        cos_weight=0.0, l1_weight=0.0, l2_weight=1.0, epochs=60, extra_epochs=0, lr_step_epochs=100, learning_rate=1e-2
    )
    res = train_autoencoder(e, 4, cfg)
    ae_err = (res.codes @ res.decoder_weight.T + res.decoder_bias - e).norm() / e.norm()
    assert res.epoch_losses[-1] < res.epoch_losses[0]
    assert ae_err < svd_err + 0.02  # SVD is optimal in Frobenius norm; the AE gets close
    assert ae_err >= svd_err - 1e-4  # ... and cannot beat it (a bias adds little on centred random data)


def test_training_is_seeded_and_learns_directions() -> None:
    e = _low_rank(v=120, d=12, r=8, noise=0.3)
    cfg = AutoencoderConfig(epochs=8, extra_epochs=2, learning_rate=1e-2)
    a, b = train_autoencoder(e, 3, cfg), train_autoencoder(e, 3, cfg)
    torch.testing.assert_close(a.codes, b.codes, atol=0, rtol=0)
    cos_ae = torch.nn.functional.cosine_similarity(a.codes @ a.decoder_weight.T + a.decoder_bias, e).mean()
    assert a.codes.shape == (120, 3) and a.decoder_weight.shape == (12, 3) and a.decoder_bias.shape == (12,)
    assert a.epoch_losses[-1] < 0.6 * a.epoch_losses[0] and cos_ae > 0.5


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: AutoencoderConfig(cos_weight=0, l1_weight=0, l2_weight=0), "all 0"),
        (lambda: AutoencoderConfig(epochs=0), "epochs"),
        (lambda: AutoencoderConfig(lerning_rate=1e-3), "lerning_rate"),
    ],
)
def test_bad_config_names_the_field(build, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        build()


@pytest.mark.parametrize("rank", [0, 16, 20])
def test_rank_out_of_range(rank: int) -> None:
    with pytest.raises(ConfigError, match=f"rank {rank} is invalid"):
        train_autoencoder(_low_rank(), rank, AutoencoderConfig(epochs=1, extra_epochs=0))
