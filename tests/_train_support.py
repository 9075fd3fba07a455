"""Tiny networks and settings shared by the train/eval tests (19 classes, like the synthetic scenes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from casprof.genotype import random_genotype
from tests.conftest import MINI, TINY
from train.settings import Augmentation, Cadence, TrainSettings

TINY19 = replace(TINY, num_classes=19)
MINI19 = replace(MINI, num_classes=19)
CROP = (32, 64)


def genotype_file(folder: Path, config=TINY19, seed: int = 0) -> Path:
    path = folder / f"genotype_{seed}_{config.fingerprint()[:6]}.json"
    random_genotype(seed, config).save(path)
    return path


def tiny_settings(genotype: Path, **changes) -> TrainSettings:
    """A few iterations of batch 2 at 32x64, validating on 2 images."""
    base = TrainSettings(
        genotype=genotype, iters=4, batch_size=2, augmentation=Augmentation(crop=CROP),
        cadence=Cadence(log_every=1, eval_every=0, checkpoint_every=100, eval_limit=2),
    )
    return replace(base, **changes)


@pytest.fixture()
def one_thread():
    """Tiny networks gain nothing from intra-op threads, and lose a lot on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
