"""Course tooling for teachers: nbgrader assignments built from the notebooks."""
