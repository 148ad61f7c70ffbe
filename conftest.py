"""Test-session settings shared by ``tests/`` and ``notebooks/``.

This file sits at the repository root so that pytest loads it for every run, including
``pytest notebooks/00_overview.ipynb`` (``tests/conftest.py`` is only loaded for tests under
``tests/``). At import time, before any notebook kernel starts, it points ``UCVAE_FIGURES``
and ``UCVAE_RUNS`` at a temporary folder (unless they are already set), so the figures the
notebooks save and the runs they train do not rewrite tracked files: nbval's kernels inherit
``os.environ``. The folder is removed when the session ends.

It also marks the slow tests ``slow`` (``SLOW``, by reason, and every notebook that nbval
runs), so that ``UCVAE_FAST=1 pytest -m "not slow"`` is the quick loop while changing the code
(about a minute on 2 cores) and ``make test`` still runs everything. A test belongs in
``SLOW`` when it (all its parametrisations together) takes about a second of CPU or more, or
needs what the quick loop does without (a browser, nbgrader, a build, a fresh interpreter).
The quick loop keeps a fast check of each estimator's unbiasedness (test_estimator.py,
test_objectives.py, test_peers.py) and the exact cross-checks.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_SESSION_DIR = tempfile.mkdtemp(prefix="ucvae-tests-")
os.environ.setdefault("UCVAE_FIGURES", os.path.join(_SESSION_DIR, "figures"))
os.environ.setdefault("UCVAE_RUNS", os.path.join(_SESSION_DIR, "runs"))


# Test files, or tests (FILE::name, every parametrisation), that are slow, by reason.
SLOW: dict[str, tuple[str, ...]] = {
    "a real browser (Chromium)": (
        "tests/test_browser.py",
        "tests/test_site.py",
        "tests/test_slides.py",
    ),
    "nbgrader executes notebooks": (
        "tests/test_assignments.py",
        "tests/test_partial_credit.py::test_nbgrader_reads_the_score_as_partial_credit",
    ),
    "a build, or a study or benchmark run end to end": (
        "tests/test_wheel.py",
        "tests/test_exact_benchmarks.py",
        "tests/test_variance_study.py::test_tiny_run_writes_csv_table_and_figures",
        "tests/test_ta_sheet.py",
        "tests/test_train.py::test_cli_train_evaluate_reproduce",
    ),
    "a fresh interpreter imports torch (about 2 s each)": (
        "tests/test_cli.py::test_bad_flag_values_from_the_shell",
        "tests/test_cli.py::test_missing_dataset_is_one_line_with_how_to_get_it",
        "tests/test_cli.py::test_bad_fast_mode_variable_is_one_line",
        "tests/test_cli.py::test_evaluate_rejects_what_is_not_a_checkpoint_from_the_shell",
        "tests/test_cli.py::test_debug_shows_the_traceback",
        "tests/test_cli.py::test_nan_weights_mid_training_exit_1_with_advice_that_works",
        "tests/test_layers.py::test_training_loads_nothing_from_studies_or_lab",
        "tests/test_pretrained.py::test_command_line",
    ),
    "fine grids and long statistical checks": (
        "tests/test_exact.py::test_shipped_2d_model_agrees_with_a_fine_uniform_grid",
        "tests/test_exact.py::test_oracle_gradient_error_is_small_on_the_shipped_model_and_grows_on_a_coarse_grid",
        "tests/test_grid_budget.py::test_zoomed_grid_agrees_with_a_fine_grid_at_a_fraction_of_the_points",
        "tests/test_flows.py::test_density_integrates_to_one_and_matches_its_samples",
        "tests/test_flows.py::test_coupled_estimate_with_a_flow_proposal_is_unbiased",
        "tests/test_rejuvenation.py::test_move_shortens_the_tail_of_a_narrow_proposal",
        "tests/test_peers.py::test_sumo_power_check_dividing_not_multiplying",
        "tests/test_peers.py::test_msc_is_biased_young_and_consistent_old",
        "tests/test_kernels.py::test_cis_chain_converges_to_posterior",
        "tests/test_cross_check.py::test_cross_check_can_fail",
        "tests/test_partial_credit.py::test_right_answers_score_full_points_on_other_seeds",
        "tests/test_pretrained.py::test_checkpoints_score_as_recorded",
        "tests/test_objectives.py::test_ucvae_unbiased_with_defensive_proposal_k_m_and_mh_move",
        "tests/test_objectives.py::test_inclusive_encoder_gradient_unbiased",
        "tests/test_peers.py::test_thinned_correction_is_unbiased_and_cheaper",
        "tests/test_rejuvenation.py::test_moved_estimate_is_unbiased",
        "tests/test_grid_budget.py::test_grid_log_marginal_and_mean_agree_with_importance_sampling",
        "tests/test_budget.py::test_squared_bias_estimate_is_unbiased_with_three_replicates",
    ),
    "training runs, one per objective": ("tests/test_train.py::test_resume_continues_bit_for_bit",),
    "widgets driven through their callbacks, figures drawn": (
        "tests/test_viz_widgets.py",
        "tests/test_widgets_practical.py",
        "tests/test_checks_landscape.py::test_budget_widget_answers",
        "tests/test_pictures.py::test_history_and_measurement_plots_label_their_axes",
    ),
}


def is_slow(item: pytest.Item) -> bool:
    """A notebook cell (nbval collects ``*.ipynb``), or a test that ``SLOW`` names: its
    file, or its name in that file (then every parametrisation)."""
    if item.path.suffix == ".ipynb":
        return True
    test = item.nodeid.split("[")[0]
    return any(
        test == entry or test.startswith(entry + "::")
        for entries in SLOW.values()
        for entry in entries
    )


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests ``slow``."""
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After nbval ran a notebook's autograded test cell without error: nbgrader must give it
    all its points (``classroom.assignments.why_not_full_marks``), as ``nbgrader validate``
    would; passing nbval is not enough, since ``checks.score`` reports a failed property with
    a ✗ and partial points instead of raising. Skipped without nbgrader (``make instructor``),
    as tests/test_assignments.py is; ``make test`` installs it."""
    result = yield
    outputs = getattr(item, "test_outputs", None)
    if item.path.suffix == ".ipynb" and outputs is not None:
        from classroom import assignments

        try:
            why = assignments.why_not_full_marks(item.cell, outputs)
        except ImportError:
            why = None
        if why:
            pytest.fail(why)
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's temporary figures and runs."""
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
