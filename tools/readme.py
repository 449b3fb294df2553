"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).

Cells whose source starts with `#| hide` are dropped, as nbdev would. `--check` fails when README.md is stale.
"""
import argparse, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]


def render(nb_path=ROOT / "nbs" / "index.ipynb") -> str:
    nb = nbformat.read(nb_path, as_version=4)
    keep = []
    for cell in nb.cells:
        first = cell.source.lstrip().splitlines()[:1]
        if first and first[0].replace(" ", "").startswith("#|hide"):
            continue
        if cell.cell_type == "code":  # drop nbdev directives from shown code
            cell.source = "\n".join(l for l in cell.source.splitlines() if not l.startswith("#|"))
        keep.append(cell)
    nb.cells = keep
    body, _ = MarkdownExporter().from_notebook_node(nb)
    header = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"
    return header + body.strip() + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the notebook")
    args = ap.parse_args()
    text, readme = render(), ROOT / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md is stale: run `python tools/readme.py` and commit it")
        print("README.md is in sync")
    else:
        readme.write_text(text, encoding="utf-8")
        print(f"wrote {readme}")
