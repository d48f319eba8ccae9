"""The demo's training budgets: epochs, so every machine trains as far and prints the same figures."""

from rayspine.config import Config
from rayspine.demo import DEMO_OVERRIDES


def test_demo_budgets_are_epochs_not_minutes():
    # A time budget made the demo's Dice depend on the machine's speed and load: a fresh clone
    # stopped the segmenter one epoch earlier than the working tree (0.928 against 0.931).
    cfg = Config().replace(**DEMO_OVERRIDES)
    assert cfg.seg.max_minutes == 0 and cfg.ae.max_minutes == 0
    assert 0 < cfg.seg.max_epochs < Config().seg.max_epochs
    assert 0 < cfg.ae.max_epochs < Config().ae.max_epochs
    assert cfg.ae.bottlenecks == (64, 8, 4, 3)  # the paper's sweep, shortened, not narrowed
