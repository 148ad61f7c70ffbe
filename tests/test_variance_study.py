"""The variance-study benchmark runs end to end (tiny settings) and covers every lever."""

import csv
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        "variance_study", ROOT / "benchmarks" / "variance_study.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_quick_plan_has_every_lever():
    vs = _load()
    plan = vs.make_plan(quick=True, datasets=["digits", "mnist"])
    for ds in ("digits", "mnist"):
        rows = [s for s in plan.settings if s.model.dataset == ds]
        levers = {s.lever for s in rows}
        assert levers == {
            "latent_dim", "encoder_family", "encoder_objective", "S", "k_m", "rejuvenation"
        }  # fmt: skip
        families = {s.model.covariance for s in rows if s.lever == "encoder_family"}
        assert families == {"full", "flow"}
        assert {s.rejuvenate for s in rows if s.lever == "rejuvenation"} == set(
            vs.REJUVENATION_SCALES
        )


def test_tiny_run_writes_csv_table_and_figures(tmp_path):
    vs = _load()
    args = ["--quick", "--epochs", "1", "--images", "1", "--replicates", "3"]
    vs.main([*args, "--out", str(tmp_path)])
    with (tmp_path / "variance_study_quick.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(vs.make_plan(True, ["digits"]).settings)
    assert any(r["covariance"] == "flow" for r in rows)
    assert all(float(r["evals_ucvae"]) >= 2 * int(r["S"]) for r in rows)
    for name in ("variance_study_quick.md", "variance_study_tau_quick.png",
                 "variance_study_work_quick.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0
