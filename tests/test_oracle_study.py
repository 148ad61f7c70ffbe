"""``oracle_study``: the plateau rule of phase 1 and the bookkeeping of a warm-started arm."""

import math

import torch

from ucvae_lite.studies import oracle_study as S
from ucvae_lite.training.data import load_dataset


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


def test_sgd_pr_scores_the_average_of_the_second_half(monkeypatch, tmp_path):
    """SGD+PR's model is the mean of the iterates after steps T/2 + 1 … T: replayed here by
    hand from the same minibatches (100 images: one batch per epoch), and it differs from
    the last iterate."""
    monkeypatch.setattr(S, "exact_ll", lambda model, x: 0.0)
    torch.manual_seed(0)
    start, data, arm = S.new_model().state_dict(), tiny(), S.ARMS["iwae-10 SGD+PR"]
    S.train_arm(data, start, "iwae-10 SGD+PR", 3, 4, progress=False, state_path=tmp_path / "a")
    saved = torch.load(tmp_path / "a", weights_only=True)
    torch.manual_seed(3)
    model = S.new_model()
    model.load_state_dict(start)
    opt = torch.optim.SGD(model.parameters(), lr=arm.sgd_lr)
    gen, data_gen = torch.Generator().manual_seed(103), torch.Generator().manual_seed(3)
    iterates = []
    for _ in range(4):
        idx = torch.randperm(len(data.train), generator=data_gen)
        loss = S.objective("iwae")(model, data.train[idx], arm.cfg, gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        iterates.append(model.state_dict()["decoder.0.weight"].clone())
    mean = (iterates[2] + iterates[3]) / 2
    assert torch.allclose(saved["decoder.0.weight"], mean, atol=1e-6)
    assert not torch.allclose(mean, iterates[3], atol=1e-6)


def test_half_batch_arm_uses_the_first_half_of_each_minibatch(monkeypatch):
    monkeypatch.setattr(S, "exact_ll", lambda model, x: 0.0)
    torch.manual_seed(0)
    start = S.new_model().state_dict()
    half = S.train_arm(tiny(), start, "ucvae-10 R=2 B=50", 0, steps=4, progress=False)
    full = S.train_arm(tiny(), start, "ucvae-10", 0, steps=4, progress=False)
    assert 0.6 < half["decoder_evals"] / full["decoder_evals"] < 1.6  # matched cost
    assert math.isnan(S.train_arm(tiny(), start, "iwae-10 SGD+PR", 0, 4, progress=False)["sqrt_v"])
