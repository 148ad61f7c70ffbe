"""Old import paths, kept for one release: the package was flat until version 0.2.

Until 0.2 every module sat in ``ucvae_lite/``; now each lives in its layer (``core``,
``models``, ``peers``, ``training``, ``studies``, ``lab``). Notebooks handed out
before the move still say, for example, ``from ucvae_lite import teaching`` or
``from ucvae_lite.checks import check_cis_step``: an import finder maps each old name to the
module that now holds it (the same module object, so monkeypatching and ``isinstance`` keep
working) and warns once, with the new path. The warning is a ``FutureWarning``, which
Python shows by default, since the people who must act on it are learners running
notebooks, not library authors.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

MOVED: dict[str, str] = {
    "targets": "core.targets",
    "iwae": "core.iwae",
    "kernels": "core.kernels",
    "hkm": "core.hkm",
    "coupled": "core.coupled",
    "estimate": "core.estimate",
    "surrogate": "core.surrogate",
    "rejuvenation": "core.rejuvenation",
    "machinery": "core.machinery",
    "diagnostics": "core.diagnostics",
    "distributions": "models.distributions",
    "flows": "models.flows",
    "vae": "models.vae",
    "linear_gaussian": "models.linear_gaussian",
    "sumo": "peers.sumo",
    "msc": "peers.msc",
    "objectives": "training.objectives",
    "train": "training.train",
    "data": "training.data",
    "evaluate": "training.evaluate",
    "runtime": "training.runtime",
    "practical": "studies.practical",
    "landscape": "studies.landscape",
    "budget": "studies.budget",
    "stats": "studies.stats",
    "reproduce": "studies.reproduce",
    "oracle_study": "studies.oracle_study",
    "exact": "studies.exact",
    "teaching": "lab.teaching",
    "demo": "lab.demo",
    "nbstore": "lab.nbstore",
    "viz": "lab.plots.viz",
    "diagrams": "lab.plots.diagrams",
    "pictures": "lab.plots.pictures",
    "widgets": "lab.widgets.chains",
    "widgets_landscape": "lab.widgets.landscape",
    "widgets_practical": "lab.widgets.practical",
    "checks": "lab.checks",
    "pretrained": "lab.pretrained",
}
"""Old module name under ``ucvae_lite`` → its new dotted path under ``ucvae_lite``."""


class MovedModuleWarning(FutureWarning):
    """An import used a path from before the package's layers (0.1); it still works, for now."""


def new_path(name: str) -> str | None:
    """``ucvae_lite.<old>[.rest]`` → ``ucvae_lite.<layer>.<new>[.rest]``; None if not moved."""
    prefix, _, rest = name.partition(".")
    if prefix != "ucvae_lite" or not rest:
        return None
    head, _, tail = rest.partition(".")
    if head not in MOVED:
        return None
    return f"ucvae_lite.{MOVED[head]}" + (f".{tail}" if tail else "")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``ucvae_lite.<old>`` and loads it as the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}  # new name → its own spec

    def find_spec(self, fullname, path=None, target=None):
        new = new_path(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = new_path(spec.name)
        warnings.warn(
            f"{spec.name} moved to {new} in ucvae_lite 0.2; the old path will be removed in "
            f"0.3: import {new}",
            MovedModuleWarning,
            stacklevel=_importer_level(),
        )
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        """Nothing to run (the module at the new path ran); the import system has just set
        ``__spec__`` to the alias's spec, so put the module's own back."""
        module.__spec__ = self._specs[module.__name__]


_ROOT_INIT = __file__.replace("_moved.py", "__init__.py")  # its __getattr__ imports old paths


def _importer_level() -> int:
    """The ``stacklevel`` that points the warning at the line that imported the old path: the
    first frame outside the import system and this file. ``warnings`` does not count the
    import system's bootstrap frames, so neither does this."""
    frame, level = sys._getframe(1), 1  # the caller of warn(): stacklevel 1

    def bootstrap(f) -> bool:
        return "importlib" in f.f_code.co_filename and "_bootstrap" in f.f_code.co_filename

    while frame is not None and (
        bootstrap(frame)
        or frame.f_code.co_filename in (__file__, _ROOT_INIT)
        or frame.f_code.co_filename.endswith("importlib/__init__.py")
    ):
        frame = frame.f_back
        if frame is not None and not bootstrap(frame):
            level += 1
    return level


def install() -> None:
    """Put the finder first, so an old submodule path (``ucvae_lite.checks.lab``) is never
    found a second time through its parent's ``__path__`` under the old name."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


def old_attribute(name: str):
    """``ucvae_lite.<old>`` as an attribute of the package (module ``__getattr__``)."""
    if name not in MOVED:
        raise AttributeError(f"module 'ucvae_lite' has no attribute {name!r}")
    return importlib.import_module(f"ucvae_lite.{name}")
