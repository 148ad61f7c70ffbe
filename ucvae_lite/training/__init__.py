"""Training a VAE with any objective: the objectives by name, the trainer, the data and the
evaluation. Imports ``core``, ``models`` and ``peers``; never ``studies`` or ``lab``."""
