"""Sphinx extension of the book: settings for the kernels that execute the notebooks.

The website shows each executed cell's output as saved text. A live progress bar saves every
redraw (or, as a widget, nothing at all offline), so while the book builds, `gptlib.utils.progress`
is told to print one final line instead. The kernels that myst-nb starts inherit this environment.
"""

import os


def setup(app):
    os.environ["GPTLIB_PROGRESS"] = "final"
    return {"parallel_read_safe": True, "parallel_write_safe": True}
