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


WIDGET_CELL = """import numpy as np
import ipywidgets as W
from IPython.display import Audio
W.VBox([W.HBox([W.Dropdown(options=['a', 'b'], value='b', description='pick'), W.Button(description='go')]),
        W.FloatSlider(value=0.3, description='λ'), W.Audio(value=Audio(np.sin(np.arange(800) / 5), rate=8000).data, format='wav'),
        W.HTML('<b>status ok</b>')])"""


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
    _write(nbs/'01_text.ipynb', [new_markdown_cell('# Text'), new_code_cell('print(6 * 7)'),
                                 new_code_cell(WIDGET_CELL), new_code_cell('Audio(np.sin(np.arange(800) / 5), rate=8000)')])
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


def test_widgets_static_and_offline(site):
    "A widget becomes static HTML of its state (no widget manager, nothing from the network); audio plays inline."
    out, m, _ = site
    text = (out/'01_text.html').read_text()
    assert m['pages']['01_text']['widgets'] == 1 and m['pages']['01_text']['audio'] == 2
    assert docs.WIDGET_VIEW not in text and docs.WIDGET_STATE not in text and 'unpkg.com' not in text
    assert 'require.js' not in text and 'mermaid.esm' not in text
    D = r'(?:="")?'  # the exporter writes boolean attributes as disabled="" and sorts attributes
    assert re.search(rf'<label>pick</label> <select disabled{D}><option>a</option><option selected{D}>b</option></select>',
                     text)
    assert re.search(rf'<button class="pmx-w" disabled{D}>go</button>', text) and '<b>status ok</b>' in text
    slider, = re.findall(r'<input [^>]*type="range"[^>]*>', text)
    assert all(a in slider for a in ('disabled', 'max="100.0"', 'min="0.0"', 'step="0.1"', 'value="0.3"')), slider
    assert len(re.findall(r'<audio\b', text)) == text.count('src="data:audio/wav;base64,') == 2  # the data inline
    for page in out.glob('*.html'):
        assert docs.offline_problems(page, page.read_text()) == []


def test_offline_checker_on_small_pages(tmp_path):
    "Each way a page can fail to be offline and clean is named; what is allowed passes."
    page = tmp_path/'p.html'
    ok = ('<a href="https://example.org/paper">a link is fine</a><img src="data:image/png;base64,AAAA">'
          '<script src="mathjax/MathJax.js"></script><script>var x = 1 // a comment</script>'
          '<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr"><pre>'
          'fbank cache: 100%</pre></div>')
    assert docs.offline_problems(page, ok) == []
    bad = {'<script src="https://cdn.example.org/require.js"></script>': "<script> loads 'https://cdn.example.org/require.js'",
           "<link rel='stylesheet' href='//fonts.example.com/a.css'>": "<link> loads '//fonts.example.com/a.css'",
           '<script>s.src = "https://unpkg.com/@jupyter-widgets/html-manager/dist/embed-amd.js"</script>':
               "an inline script refers to the network ('https://unpkg.com",
           f'<script type="{docs.WIDGET_VIEW}">{{"model_id": "1"}}</script>': 'a widget shows no static view',
           '<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr"><pre>'
           'x.py:3: UserWarning: careful</pre></div>': 'a cell prints a warning (UserWarning',
           '<pre>ICBHI index of /tmp/cache/set: 48 recordings</pre>': "a local absolute path '/tmp/' shows",
           f'<pre>{docs.ROOT}/nbs/x.py</pre>': f"a local absolute path '{docs.ROOT}/' shows"}
    for snippet, why in bad.items():
        problems = docs.offline_problems(page, ok + snippet)
        assert problems and all(p.startswith(f'{page}: ') for p in problems), snippet
        assert any(why in p for p in problems), (snippet, problems)
    assert len(docs.offline_problems(page, ok + ''.join(bad))) >= len(bad)


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
    # a page that lost an audio player, loads a script from the network and shows a warning and a local path
    text = (out/'01_text.html').read_text()
    try:
        broken = text.replace('<audio', '<span', 1).replace('</head>', '<script src="https://cdn.example.org/x.js">'
                                                             '</script></head>', 1)
        broken += ('<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr">'
                   '<pre>/tmp/x.py:1: DeprecationWarning: old</pre></div>')
        (out/'01_text.html').write_text(broken)
        problems = docs.check(out, no_figures=('01_text',))
        assert any('01_text.html: 1 audio players, but the executed notebook produced 2' in p for p in problems)
        assert any("loads 'https://cdn.example.org/x.js' from the network" in p for p in problems)
        assert any('a cell prints a warning (DeprecationWarning' in p for p in problems)
        assert any("a local absolute path '/tmp/' shows" in p for p in problems)
        assert len(problems) == 4, problems
    finally:
        (out/'01_text.html').write_text(text)
    assert docs.check(out, no_figures=('01_text',)) == []
    with pytest.raises(SystemExit, match="no notebook \\['nope'\\]"):
        docs.build(out, only=['nope'], nbs=nbs)


def test_scrub_paths():
    "Outputs name this machine's folders by name; data URIs and code are left alone."
    nb = new_notebook(cells=[new_code_cell('print(1)')])
    cell = nb.cells[0]
    cell.outputs = [nbformat.v4.new_output('stream', name='stdout', text='read /tmp/tmpab12/x.txt and /tmpfoo/y\n'),
                    nbformat.v4.new_output('execute_result', data={
                        'text/plain': f"'{docs.ROOT}/nbs/syn'",
                        'text/html': '<img src="data:image/png;base64,AA/tmp/BB"><p>/home/u/.cache/patchmix-nb/set</p>'}),
                    nbformat.v4.new_output('error', ename='ValueError', evalue='/tmp/tmpab12/x.txt: bad',
                                           traceback=['/tmp/tmpab12/x.txt: bad'])]
    names = [('/home/u/.cache/patchmix-nb', '$PATCHMIX_HOME'), (str(docs.ROOT), '.'), ('/tmp', '$TMPDIR')]
    assert docs.scrub_paths(nb, sorted(names, key=lambda kv: -len(kv[0]))) == 5
    out = cell.outputs
    assert out[0]['text'] == 'read $TMPDIR/tmpab12/x.txt and /tmpfoo/y\n'  # a longer name is not a folder of ours
    assert out[1]['data']['text/plain'] == "'./nbs/syn'"
    assert out[1]['data']['text/html'] == '<img src="data:image/png;base64,AA/tmp/BB"><p>$PATCHMIX_HOME/set</p>'
    assert out[2]['evalue'] == out[2]['traceback'][0] == '$TMPDIR/tmpab12/x.txt: bad'
    assert cell.source == 'print(1)'
    page = Path('p.html')
    assert docs.offline_problems(page, out[1]['data']['text/html'] + out[0]['text']) == []  # base64 bytes are no path
