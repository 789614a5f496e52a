"""Sphinx extension of the book: settings for the kernels that execute the notebooks.

The website shows each executed cell's output as saved text. A live progress bar saves every
redraw (or, as a widget, nothing at all offline), so while the book builds, `gptlib.utils.progress`
is told to print one final line instead. The kernels that myst-nb starts inherit this environment.
"""

import os


def _one_copy_of_each_script(app, pagename, templatename, context, doctree):
    """sphinx-thebe 0.3.1 under Sphinx 7.4 writes its inline config script twice (a JS SyntaxError)."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        key = (getattr(js, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    if "script_files" in context:
        context["script_files"][:] = unique


def setup(app):
    os.environ["GPTLIB_PROGRESS"] = "final"
    app.connect("html-page-context", _one_copy_of_each_script, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
