"""Distillation losses (METHODS.md §1, §2, §4, §5, §6) as plain functions of captured encoder internals.

See :mod:`slimformer.distill.kl` for the KL helpers (explicit direction / mask / reduction) and
:mod:`slimformer.distill.losses` for the losses and the :data:`LOSSES` registry.
"""

from slimformer.distill import losses as _losses
from slimformer.distill.kl import DIRECTIONS, REDUCTIONS, Direction, Reduction, kl_div
from slimformer.distill.losses import *  # noqa: F403  (the losses and LOSSES: losses.__all__)

__all__ = ["DIRECTIONS", "REDUCTIONS", "Direction", "Reduction", "kl_div", *_losses.__all__]
