"""``oracle_study``: the plateau rule of phase 1 and the bookkeeping of a warm-started arm."""

import torch

from ucvae_lite import oracle_study as S
from ucvae_lite.data import load_dataset


def tiny():
    return load_dataset("digits", binarization="static").subset(100, 4, 4)


def test_plateau_rule_stops_and_keeps_the_last_real_gain(monkeypatch):
    scores = iter([1.0, 1.005, 1.02, 1.025, 1.026, 5.0])  # 5.0 is never reached
    monkeypatch.setattr(S, "exact_ll", lambda model, x: next(scores))
    result = S.train_until_plateau(tiny(), "iwae", max_epochs=10, eval_every=1, patience=2)
    assert (result["best_epoch"], result["valid_ll"], result["epochs"]) == (3, 1.02, 5)
    assert [e for e, _ in result["history"]] == [1, 2, 3, 4, 5]


def test_arm_counts_replicas_and_scores_curve_marks(monkeypatch):
    monkeypatch.setattr(S, "exact_ll", lambda model, x: float(x.shape[0]))
    torch.manual_seed(0)
    start = S.new_model().state_dict()
    one = S.train_arm(tiny(), start, "iwae-10", 0, steps=4, curve_images=3, progress=False)
    two = S.train_arm(tiny(), start, "ucvae-10 R=2", 0, steps=4, curve_images=3, progress=False)
    plain = S.train_arm(tiny(), start, "ucvae-10", 0, steps=4, curve_images=3, progress=False)
    assert [c[0] for c in one["curve"]] == [0, 2, 3, 4]
    assert one["decoder_evals"] == 4 * 100 * 10  # steps × batch × S
    assert two["decoder_evals"] > 2 * one["decoder_evals"]  # two coupled estimates per image
    assert 1.5 < two["decoder_evals"] / plain["decoder_evals"] < 2.5
    assert one["train_ll"] == 100.0 and one["curve"][0][3] == 3.0
