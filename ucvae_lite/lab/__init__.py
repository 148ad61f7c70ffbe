"""What the notebooks use: step-by-step teaching versions of the chains (``teaching``), the
checkers (``checks``), plots (``plots``), widgets (``widgets``), the shipped models
(``pretrained``), the CLI demo and the notebook store."""
