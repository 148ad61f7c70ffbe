"""The measurements behind the notebooks and the README: when the estimator is practical
(notebook 06), the landscape of methods at equal budget (07), the exact d = 2 study, the
reproduction runs, and the statistics they share."""
