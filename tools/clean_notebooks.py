"""Strip outputs and editor metadata from the book's notebooks, in place.

    python tools/clean_notebooks.py            # clean every notebook under chapters/
    python tools/clean_notebooks.py --check    # exit 1 and list the notebooks that are not clean

A clean notebook has no outputs or execution counts, notebook metadata limited to the kernel
and language, and cell metadata limited to tags and myst-nb figure options. The website build executes the notebooks, so
nothing is lost; git diffs stay readable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB_METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
CELL_METADATA_KEYS = {"tags", "mystnb"}  # mystnb: figure captions and names


# Cells that matter when running a notebook but not when reading the website: the Colab set-up
# cell and the `#| default_exp` marker. They get the tag that hides them from the built page.
HIDDEN_ON_WEBSITE = ('"google.colab" in sys.modules', "#| default_exp")


def clean(nb: dict) -> dict:
    """The notebook with outputs and non-essential metadata removed (a new dict)."""
    out = {"cells": [], "metadata": NB_METADATA, "nbformat": 4, "nbformat_minor": 5}
    for cell in nb["cells"]:
        c = {"cell_type": cell["cell_type"], "id": cell["id"],
             "metadata": {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA_KEYS},
             "source": cell["source"]}
        if isinstance(c["source"], list):
            c["source"] = "".join(c["source"])
        if cell["cell_type"] == "code" and any(m in c["source"] for m in HIDDEN_ON_WEBSITE):
            tags = c["metadata"].get("tags", [])
            if "remove-cell" not in tags:
                c["metadata"]["tags"] = [*tags, "remove-cell"]
        if cell["cell_type"] == "code":
            c["execution_count"] = None
            c["outputs"] = []
        out["cells"].append(c)
    return out


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("paths", nargs="*", type=Path)
    args = ap.parse_args(argv)
    paths = args.paths or sorted((ROOT / "chapters").rglob("*.ipynb"))
    dirty = []
    for p in paths:
        if ".ipynb_checkpoints" in p.parts:
            continue
        text = p.read_text(encoding="utf-8")
        new = dumps(clean(json.loads(text)))
        if new != text:
            dirty.append(p)
            if not args.check:
                p.write_text(new, encoding="utf-8")
    for p in dirty:
        print(("not clean: " if args.check else "cleaned: ") + str(p))
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
