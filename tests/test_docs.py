"""The offline docs build (tools/docs.py) on a tiny notebook set: pages, embedded figures, hidden cells, links, check.

The full site is built by `./scripts/docs` and checked by `python tools/docs.py --check _docs` (CI)."""
import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('docs', ROOT/'tools'/'docs.py')
docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs)


def _write(path, cells):
    nb = new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}})
    nbformat.write(nb, path)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    nbs = tmp_path_factory.mktemp('nbs')
    _write(nbs/'index.ipynb', [new_markdown_cell('# Tiny site'),
                               new_markdown_cell('| notebook | module | idea |\n|---|---|---|\n'
                                                 '| `00_fig` | `fig` | draws a line |\n| `01_text` | – | prints |\n'
                                                 '| `99_absent` | – | has no notebook, so no row |')])
    _write(nbs/'00_fig.ipynb', [
        new_markdown_cell('# A figure\n\nSee `01_text` and [the text notebook](01_text.ipynb).'),
        new_code_cell('#| hide\nimport matplotlib.pyplot as plt\nHIDDEN_MARKER_SHOULD_NOT_SHOW = 1'),
        new_code_cell('#| export\ndef slope(): return 2'),
        new_code_cell("plt.plot([0, 1], [0, slope()]);"),
        new_code_cell("#| notest\nraise RuntimeError('a notest cell ran')")])
    _write(nbs/'01_text.ipynb', [new_markdown_cell('# Text'), new_code_cell('print(6 * 7)')])
    out = tmp_path_factory.mktemp('site')
    manifest = docs.build(out, nbs=nbs, log=lambda *a: None)
    return out, manifest, nbs


def test_table_of_the_real_index():
    rows = docs.notebook_table(ROOT/'nbs'/'index.ipynb')
    names = [r['name'] for r in rows]
    assert names[:2] == ['00_core', '01_icbhi'] and '07_explore' in names and '10_method' in names
    assert all((ROOT/'nbs'/f'{n}.ipynb').exists() for n in names)


def test_pages_figures_hidden_cells(site):
    out, m, _ = site
    assert m['notebooks'] == ['00_fig', '01_text']  # the row without a notebook is left out
    assert {p.name for p in out.glob('*.html')} == {'index.html', '00_fig.html', '01_text.html'}
    assert m['pages']['00_fig']['figures'] == 1 and m['pages']['01_text']['figures'] == 0
    fig = (out/'00_fig.html').read_text()
    assert len(docs.IMG.findall(fig)) == 1  # the figure, embedded as a data: URI
    assert 'HIDDEN_MARKER_SHOULD_NOT_SHOW' not in fig  # the #| hide cell ran but is not shown
    code = re.sub(r'<[^>]+>', '', ' '.join(re.findall(r'<pre>(.*?)</pre>', fig, re.S)))
    assert 'slope' in code and '#| export' not in code and '#|' not in code
    assert '42' in (out/'01_text.html').read_text()
    assert 'a notest cell ran' in fig  # shown; not run (it raises: the build would have failed)
    assert 'href="01_text.html"' in fig  # the .ipynb link and the inline name both point to the page
    for page in out.glob('*.html'):  # every page carries the navigation to every page
        t = page.read_text()
        assert all(f'href="{n}.html"' in t for n in ('index', '00_fig', '01_text'))


def test_check(site):
    out, _, nbs = site
    assert docs.check(out) == [f'{out/"01_text.html"}: nbs/01_text.ipynb produced no figure (executed with the inline backend)']
    assert docs.check(out, no_figures=('01_text',)) == []
    # break it: a page without its figure, a missing page, a dead link
    fig = (out/'00_fig.html').read_text()
    try:
        (out/'00_fig.html').write_text(docs.IMG.sub('<img src="x.png', fig))
        (out/'01_text.html').rename(out/'01_text.bak')
        problems = docs.check(out, no_figures=('01_text',))
        assert any('00_fig.html: 0 embedded images, but the executed notebook produced 1' in p for p in problems)
        assert any('01_text.html: missing' in p for p in problems)
        assert any("link '01_text.html' does not resolve" in p for p in problems)
    finally:
        (out/'00_fig.html').write_text(fig)
        (out/'01_text.bak').rename(out/'01_text.html')
    with pytest.raises(SystemExit, match="no notebook \\['nope'\\]"):
        docs.build(out, only=['nope'], nbs=nbs)
