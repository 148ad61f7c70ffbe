"""Smoke tests of the exact d = 2 benchmarks: they run end to end on tiny settings and write
their tables where they are told (the work tree stays clean)."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_exact_gradient_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("UCVAE_FIGURES", str(tmp_path))
    load("exact_gradient").main(["--images", "12", "--batches", "4", "--batch-size", "6"])
    rows = list(csv.DictReader(open(tmp_path / "exact_gradient.csv")))
    assert [r["method"] for r in rows][:3] == ["iwae-3", "iwae-10", "iwae-50"]
    iwae = {r["method"]: float(r["decoder_evals"]) for r in rows}
    assert iwae["iwae-10"] == 10.0 and iwae["ucvae-10 R=2"] > 2 * 10
    assert (tmp_path / "exact_gradient.png").exists()


def test_exact_study_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("UCVAE_FIGURES", str(tmp_path))
    args = ["--quick", "--out", str(tmp_path / "runs"), "--subset", "100", "4", "4"]
    args += ["--steps", "4", "--max-epochs", "2", "--eval-every", "1", "--patience", "1"]
    args += ["--seeds", "0", "--arms", "iwae-10", "ucvae-10", "oracle", "--curve-images", "4"]
    args += ["--oracle-points", "11", "--phase1", "iwae"]
    load("exact_study").main(args)
    rows = {r["arm"]: r for r in csv.DictReader(open(tmp_path / "exact_study_quick.csv"))}
    assert set(rows) == {"iwae-10", "ucvae-10", "oracle"}
    marks = list(csv.DictReader(open(tmp_path / "results_exact2d_quick.csv")))
    assert {(m["arm"], m["S"], m["step"]) for m in marks} >= {
        ("ucvae-10", "10", "4"),
        ("oracle", "", "0"),
    }
    assert all((m["test_ll"] != "") == (m["step"] == "4") for m in marks)  # scored at the end
    saved = tmp_path / "runs" / "phase2_oracle_0.pt"  # the first seed's weights, for the next
    load("exact_gradient").main(
        ["--images", "12", "--batches", "4", "--batch-size", "6", "--checkpoint", str(saved)]
        + ["--tag", "end"]
    )
    assert "phase2_oracle_0.pt" in (tmp_path / "exact_gradient_end.md").read_text()
    with pytest.raises(SystemExit):  # a checkpoint without a tag would overwrite the table
        load("exact_gradient").main(["--checkpoint", str(saved)])
    assert float(rows["iwae-10"]["train_vs_iwae-10"]) == 0.0
    assert float(rows["oracle"]["decoder_evals"]) == 4 * 100 * 11 * 11  # steps × B × grid
    with pytest.raises(SystemExit):  # bad input: one clear line, non-zero exit
        load("exact_study").main(["--steps", "2"])


def test_exact_study_pairs_phase1_by_initialisation():
    """ucvae − IWAE is taken within each initialisation seed, not across them."""

    def run(objective, init, shift):
        return {"objective": objective, "init_seed": init, "best_epoch": 1, "epochs": 2,
                "valid_ll": -22.0 + shift, "train_ll": -21.0 + shift, "test_ll": -23.0 + shift,
                "cpu_seconds": 60.0}  # fmt: skip

    results = [run("iwae", 0, 0.0), run("ucvae", 0, 0.1), run("iwae", 1, -1.0),
               run("ucvae", 1, -1.3), run("elbo", 2, 0.0)]  # fmt: skip
    lines = load("exact_study").phase1_lines(results, data_seed=0)
    train = next(line for line in lines if line.startswith("- train"))
    assert "+0.100, -0.300 (seeds 0, 1)" in train
    assert "mean -0.100 ± 0.200, ucvae ahead in 1 of 2" in train
    alone = load("exact_study").phase1_lines(results[:1] + results[4:], data_seed=0)
    assert not any(line.startswith("- train") for line in alone)
