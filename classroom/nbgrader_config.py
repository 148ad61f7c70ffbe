"""nbgrader's settings for this course; ``make assignments`` copies this file to the course
directory (``build/assignments/``), where every ``nbgrader`` command reads it.

Everything else is nbgrader's defaults: one assignment per notebook, ``source/NN_name/``,
``release/NN_name/``, ``submitted/STUDENT/NN_name/``, ``autograded/``, ``feedback/`` and the
gradebook ``gradebook.db``, all under the course directory.
"""

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    IncludeHeaderFooter,
    InstantiateTests,
    LockCells,
    SaveCells,
)

c = get_config()  # noqa: F821 - defined by traitlets when it loads this file


class ClearMarkdownMetadata(ClearMetadataPreprocessor):
    """nbconvert's ClearMetadataPreprocessor clears code cells only. The manually graded
    written answers are markdown cells, collapsed (jupyter.source_hidden) in the stored
    notebooks so that their model answers do not show: their stubs must open in the release."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown":
            items = cell.metadata.items()
            cell.metadata = dict(self.nested_filter(items, self.preserve_cell_metadata_mask))
        return cell, resources


c.CourseDirectory.course_id = "ucvae_lite"

# generate_assignment: nbgrader 0.9.6's own list, plus nbconvert's ClearMetadataPreprocessor
# after ClearOutput. The stored notebooks collapse their solution cells (jupyter.source_hidden)
# and keep the saved widget state of their outputs; a released notebook must show the stub
# it asks the learner to fill, and has no outputs to keep widget state for. So the release
# keeps only nbgrader's and the tags' cell metadata, and the kernel's notebook metadata.
c.GenerateAssignment.preprocessors = [
    IncludeHeaderFooter,
    InstantiateTests,
    LockCells,
    ClearSolutions,
    ClearOutput,
    ClearMetadataPreprocessor,
    ClearMarkdownMetadata,
    CheckCellMetadata,
    ComputeChecksums,
    SaveCells,
    ClearHiddenTests,
    ClearMarkScheme,
    ComputeChecksums,
    CheckCellMetadata,
]
c.ClearMetadataPreprocessor.enabled = True  # nbconvert's preprocessors are off until enabled
c.ClearMetadataPreprocessor.preserve_cell_metadata_mask = {
    "nbgrader",
    "tags",
    "deletable",
    "editable",
}
c.ClearMetadataPreprocessor.preserve_nb_metadata_mask = {"kernelspec", "language_info"}
# The list has no Execute: a release is not run. Run, its stubs would raise, and its other
# cells would show outputs the learner is meant to predict first and then produce; the learner
# runs it. tests/test_assignments.py runs each release as handed in: only the exercises' cells
# fail.

# autograde and validate execute notebooks: a cell may take longer than nbgrader's default
# 30 s in full mode on a small machine (fast mode: UCVAE_FAST=1 in the environment)
c.Execute.timeout = 600
# the kernel gets CurveZMQ keys, so it does not warn that it runs over TCP without encryption
c.KernelManager.transport_encryption = "auto"

# zip_collect: submissions downloaded from a learning platform, one folder per student,
# downloaded/NN_name/archive/ANY.zip holding STUDENT/NN_name.ipynb (or the same tree unzipped)
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+\.ipynb)$"
