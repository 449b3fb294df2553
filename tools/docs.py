"""Build the docs site offline: execute the notebooks and render them to HTML with a navigation built from nbs/index.ipynb.

`nbdev_docs` needs Quarto, which cannot be installed here; this is the offline path (where Quarto exists, `nbdev_docs`
still works). Each notebook listed in the index's notebook table (a row per notebook: `| \\`01_icbhi\\` | ... |`) is
executed with the inline matplotlib backend (so figures are embedded as PNG; cells flagged with settings.ini's
`tst_flags`, e.g. `#| notest`, are shown but not run, as nbdev_test does), its `#| hide` cells are left out (after
they ran), nbdev directives (`#| export`, ...) are stripped from the code shown, and it is written as `OUT/<name>.html`
with a sidebar linking every page; `OUT/index.html` is the index notebook itself. `OUT/manifest.json` records, per
page, the figures its executed notebook produced and the time it took.

    python tools/docs.py [--out _docs] [--only 07_explore 13_metrics] [--jobs N] [--timeout S]
    python tools/docs.py --check _docs     # every page there, with its figures, every link resolving

The pages are offline and name no folder of the machine that built them: nothing is loaded from the network, and
the outputs show this machine's folders by name (`$PATCHMIX_HOME/...`, `$TMPDIR/...`, `~/...`, paths relative to
the repository; `scrub_paths`). Widgets (`ipywidgets`) need a widget manager script that
would come from a CDN, so each widget view is rendered instead as static HTML of its last state (`static_widgets`:
boxes, disabled controls showing their values, images and audio players with their data inline, an Output's
outputs); require.js and the mermaid loader (unused) are left out of the template, and MathJax is copied locally
(without `jupyter-server-mathjax`, TeX shows as written).

`--check` fails when a notebook of the table has no page, a page lacks the figures or audio players its notebook
produced, a numbered notebook (other than those in --no-figures, default `27_cli` and `28_main`, the command line)
produced no figure, a local link does not resolve, an nbdev directive or a hidden cell's code shows, a page loads a
script or stylesheet from the network (an http(s) or protocol-relative `src`/`href` of a `<script>` or `<link>`, or an
inline script naming an http(s) URL), a widget is left without its static view, a cell's stderr shows a warning, or a
page holds a local absolute path (`/tmp/`, `/work/`, the repository's or the home folder's path).
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
INLINE = 'module://matplotlib_inline.backend_inline'
ROW = re.compile(r'^\|\s*`([^`]+)`\s*\|\s*(.*?)\s*\|\s*(.*?)\s*\|\s*$')
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(.*)$')
IMG = re.compile(r'<img[^>]+src="data:image/(?:png|jpeg|svg\+xml)')


def notebook_table(index: Path) -> list[dict]:
    "Rows of the index notebook's table of notebooks, in reading order: name (path under nbs/ without .ipynb), module, idea."
    nb = nbformat.read(index, as_version=4)
    rows = []
    for cell in nb.cells:
        if cell.cell_type != 'markdown': continue
        for line in cell.source.splitlines():
            m = ROW.match(line)
            if m and (index.parent / f'{m[1]}.ipynb').exists():
                rows.append(dict(name=m[1], module=m[2].strip('`'), idea=m[3]))
    if not rows: raise SystemExit(f'{index}: no table of notebooks (rows like "| `01_icbhi` | `icbhi` | idea |") found')
    return rows


def directives(source: str) -> dict[str, str]:
    "nbdev directives (`#| hide`, `#| echo: false`, ...) at the top of a cell: {name: value}."
    out = {}
    for line in source.splitlines():
        m = DIRECTIVE.match(line)
        if not m:
            if line.strip(): break
            continue
        k, _, v = m[1].partition(':')
        k = k.strip().split()[0] if k.strip() else ''
        if k: out[k] = v.strip() or ' '.join(m[1].split()[1:])
    return out


def n_figures(nb) -> int:
    "Image outputs of an executed notebook."
    return sum(any(k.startswith('image/') for k in o.get('data', {})) for c in nb.cells if c.cell_type == 'code'
               for o in c.get('outputs', []))


WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'
AUDIO = re.compile(r'<audio\b')


def n_audio(nb) -> int:
    "Audio players (`<audio` elements) in the HTML outputs of a (display-ready) notebook."
    return sum(len(AUDIO.findall(''.join(o.get('data', {}).get('text/html', '')))) for c in nb.cells
               if c.cell_type == 'code' for o in c.get('outputs', []))


def _buffer(m: dict, key: str) -> str:
    "A binary trait of a widget model as base64 (the state keeps it in `buffers`), '' when empty."
    return next((b['data'] for b in m.get('buffers', []) if b.get('path') == [key]), '') or ''


def widget_html(state: dict, model_id: str, depth: int = 0) -> str:
    "Static HTML of a widget model and its children at their last state: no script, disabled controls, inline media."
    m = state.get(model_id.removeprefix('IPY_MODEL_'))
    if m is None or depth > 30: return ''
    st, name = m.get('state', {}), m.get('model_name', '')
    esc = lambda v: html.escape(str(v))
    layout = state.get(str(st.get('layout', '')).removeprefix('IPY_MODEL_'), {}).get('state', {})
    width = f' style="width:{esc(layout["width"])}"' if layout.get('width') else ''
    desc = f'<label>{esc(st["description"])}</label> ' if st.get('description') else ''
    kids = lambda: ''.join(widget_html(state, c, depth + 1) for c in st.get('children', []))
    if name in ('VBoxModel', 'BoxModel', 'GridBoxModel', 'AccordionModel', 'TabModel', 'StackModel'):
        return f'<div class="pmx-w pmx-vbox">{kids()}</div>'
    if name == 'HBoxModel': return f'<div class="pmx-w pmx-hbox">{kids()}</div>'
    if name in ('DropdownModel', 'SelectModel'):
        labels, i = st.get('_options_labels', []), st.get('index')
        opts = ''.join(f'<option{" selected" if k == i else ""}>{esc(t)}</option>' for k, t in enumerate(labels[:300]))
        return f'<span class="pmx-w">{desc}<select disabled{width}>{opts}</select></span>'
    if name in ('ToggleButtonsModel', 'RadioButtonsModel'):
        labels, i = st.get('_options_labels', []), st.get('index')
        return f'<span class="pmx-w">{desc}' + ''.join(
            f'<button disabled class="{"pmx-on" if k == i else ""}">{esc(t)}</button>' for k, t in enumerate(labels)) + '</span>'
    if name in ('ButtonModel', 'ToggleButtonModel'):
        return f'<button disabled class="pmx-w"{width}>{esc(st.get("description", ""))}</button>'
    if name in ('HTMLModel', 'HTMLMathModel'): return f'<span class="pmx-w">{desc}{st.get("value", "")}</span>'
    if name == 'LabelModel': return f'<span class="pmx-w">{esc(st.get("value", ""))}</span>'
    if name in ('TextModel', 'IntTextModel', 'FloatTextModel', 'BoundedIntTextModel', 'BoundedFloatTextModel'):
        return f'<span class="pmx-w">{desc}<input disabled value="{esc(st.get("value", ""))}"{width}></span>'
    if name in ('FloatSliderModel', 'IntSliderModel', 'FloatLogSliderModel'):
        return (f'<span class="pmx-w">{desc}<input type="range" disabled min="{esc(st.get("min", 0))}" '
                f'max="{esc(st.get("max", 100))}" step="{esc(st.get("step", 1))}" value="{esc(st.get("value", 0))}"> '
                f'{esc(st.get("value", ""))}</span>')
    if name in ('FloatProgressModel', 'IntProgressModel'):
        return f'<span class="pmx-w">{desc}<progress value="{esc(st.get("value", 0))}" max="{esc(st.get("max", 100))}"></progress></span>'
    if name == 'CheckboxModel':
        return f'<label class="pmx-w"><input type="checkbox" disabled{" checked" if st.get("value") else ""}> {esc(st.get("description", ""))}</label>'
    if name == 'ImageModel':
        data = _buffer(m, 'value')
        return f'<img class="pmx-w" src="data:image/{esc(st.get("format", "png"))};base64,{data}"{width}>' if data else ''
    if name == 'AudioModel':
        data = _buffer(m, 'value')
        src = f' src="data:audio/{esc(st.get("format", "wav"))};base64,{data}"' if data else ''
        return f'<audio class="pmx-w" controls{src}></audio>'
    if name == 'OutputModel':
        return '<div class="pmx-w pmx-output">' + ''.join(_output_html(o) for o in st.get('outputs', [])) + '</div>'
    return f'<span class="pmx-w">[{esc(name.removesuffix("Model"))}]</span>'


def _output_html(o: dict) -> str:
    "Static HTML of one output of an Output widget."
    d = o.get('data', {})
    for mime in ('image/png', 'image/jpeg'):
        if mime in d: return f'<img src="data:{mime};base64,{"".join(d[mime])}">'
    if 'text/html' in d: return ''.join(d['text/html'])
    if WIDGET_VIEW in d: return '<span>[widget]</span>'
    text = ''.join(d.get('text/plain', '')) if d else ''.join(o.get('text', ''))
    return f'<pre>{html.escape(text)}</pre>' if text else ''


WIDGET_CSS = """<style>
 .pmx-static { border: 1px dashed #bbb; border-radius: 6px; padding: 0.5rem; margin: 0.3rem 0; }
 .pmx-static .pmx-note { font: 12px system-ui, sans-serif; color: #667; margin-bottom: 0.4rem; }
 .pmx-hbox { display: flex; flex-wrap: wrap; gap: 0.4rem; align-items: center; margin: 0.2rem 0; }
 .pmx-vbox { display: flex; flex-direction: column; gap: 0.2rem; }
 .pmx-static img { max-width: 100%; height: auto; }
 .pmx-static button.pmx-on { font-weight: 600; background: #dde4f3; }
 .pmx-static label { margin-right: 0.2rem; }
</style>"""


def static_widgets(nb) -> int:
    "Replace each widget view by static HTML of its last state (`widget_html`) and drop the widget state; the count."
    state = nb.metadata.get('widgets', {}).get(WIDGET_STATE, {}).get('state', {})
    n = 0
    for cell in nb.cells:
        for o in cell.get('outputs', []) if cell.cell_type == 'code' else ():
            view = o.get('data', {}).get(WIDGET_VIEW)
            if view is None: continue
            body = widget_html(state, view.get('model_id', ''))
            note = ('static view of an interactive widget as the notebook left it; run the notebook to use it' if body
                    else 'an interactive widget (its state was not saved); run the notebook to use it')
            o['data'] = {'text/html': f'<div class="pmx-static"><div class="pmx-note">{note}</div>{body}</div>'}
            n += 1
    nb.metadata.pop('widgets', None)
    return n


DATA_URI = re.compile(r'data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+')


def _outside_data_uris(text: str, f) -> str:
    "Apply `f` to the parts of `text` that are not base64 data URIs (whose bytes could spell a path by chance)."
    out, i = [], 0
    for m in DATA_URI.finditer(text):
        out += [f(text[i:m.start()]), m[0]]
        i = m.end()
    return ''.join(out + [f(text[i:])])


def path_names() -> list[tuple[str, str]]:
    """This machine's folders as a page names them instead: the cache ($PATCHMIX_HOME), the repository (paths
    relative to it), the temporary folder ($TMPDIR), the home folder (~). Longest first."""
    import tempfile
    home = Path.home()
    cache = os.environ.get('PATCHMIX_HOME') or Path(os.environ.get('XDG_CACHE_HOME') or home / '.cache') / 'patchmix-nb'
    names = [(str(Path(cache).expanduser()), '$PATCHMIX_HOME'), (str(ROOT), '.'), (tempfile.gettempdir(), '$TMPDIR'),
             ('/tmp', '$TMPDIR'), (str(home), '~')]
    return sorted({(k, v) for k, v in names if k not in ('', '/')}, key=lambda kv: -len(kv[0]))


def scrub_paths(nb, names: list[tuple[str, str]] | None = None) -> int:
    """Name this machine's folders in the outputs as `path_names` says ('/tmp/tmpab12/x.txt' -> '$TMPDIR/tmpab12/x.txt'):
    a page shows where a file is relative to a folder the reader has too, never the builder's absolute paths."""
    names = path_names() if names is None else names
    pattern = re.compile('|'.join(re.escape(k) + r'(?=[/\s\'"),:;\]}|]|$)' for k, _ in names))
    lookup = dict(names)
    n = 0

    def sub(text: str) -> str:
        nonlocal n
        new, k = pattern.subn(lambda m: lookup[m[0]], text)
        n += k
        return new
    fix = lambda v: _outside_data_uris(''.join(v), sub) if isinstance(v, (str, list)) else v
    for cell in nb.cells:
        for o in cell.get('outputs', []) if cell.cell_type == 'code' else ():
            if 'text' in o: o['text'] = fix(o['text'])
            if 'traceback' in o: o['traceback'] = [fix(t) for t in o['traceback']]
            if 'evalue' in o: o['evalue'] = fix(o['evalue'])
            for mime in ('text/plain', 'text/html', 'text/markdown', 'text/latex'):
                if mime in o.get('data', {}): o['data'][mime] = fix(o['data'][mime])
    return n


def for_display(nb):
    "Drop `#| hide` / `include: false` cells, strip directive lines, honour `echo: false` and `output: false`."
    keep = []
    for cell in nb.cells:
        d = directives(cell.source)
        if 'hide' in d or d.get('include') == 'false': continue
        if cell.cell_type == 'code':
            cell.source = '\n'.join(l for l in cell.source.splitlines() if not DIRECTIVE.match(l)).strip('\n')
            if d.get('echo') == 'false': cell.metadata['jupyter'] = {'source_hidden': True}; cell.source = ''
            if d.get('output') == 'false': cell.outputs = []
            if not cell.source and not cell.outputs: continue
        keep.append(cell)
    nb.cells = keep
    return nb


def test_flags(settings: Path = ROOT / 'settings.ini') -> set[str]:
    "nbdev's `tst_flags` (cells flagged `#| notest`, `#| slow` ... are not run by nbdev_test, nor here)."
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(settings)
    return set(cfg.get('DEFAULT', 'tst_flags', fallback='notest').split())


def execute(path: Path, timeout: int = 600, kernel: str = 'python3', skip: set[str] = frozenset(),
            threads: int | None = None):
    """Run a notebook in its own folder with the inline matplotlib backend (cells flagged with `skip` are shown, not
    run); `threads`: the kernel's torch/OpenMP threads (notebooks run side by side share the cores)."""
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    skipped = {i: c.source for i, c in enumerate(nb.cells) if c.cell_type == 'code' and set(directives(c.source)) & skip}
    for i in skipped: nb.cells[i].source = ''
    NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={'metadata': {'path': str(path.parent)}}).execute(
        env=dict(os.environ, MPLBACKEND=INLINE,   # figures become image/png outputs
                 **({'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)} if threads else {})))
    for i, src in skipped.items(): nb.cells[i].source = src
    return nb


NAV_CSS = """
<style>
 body { margin-left: 17rem !important; }
 nav.pmx { position: fixed; top: 0; left: 0; bottom: 0; width: 16rem; overflow-y: auto; padding: 1rem 0.8rem;
           background: #f7f7f9; border-right: 1px solid #ddd; font: 14px/1.35 system-ui, sans-serif; z-index: 10; }
 nav.pmx a { display: block; padding: 0.25rem 0.4rem; color: #234; text-decoration: none; border-radius: 4px; }
 nav.pmx a:hover { background: #e6e9f0; } nav.pmx a.here { background: #dde4f3; font-weight: 600; }
 nav.pmx .idea { display: block; font-size: 11.5px; color: #667; font-weight: normal; }
 nav.pmx h1 { font-size: 16px; margin: 0 0 0.6rem 0.4rem; }
</style>"""


def nav(title: str, rows: list[dict], here: str) -> str:
    def a(href, text, idea='', cls=''):
        return (f'<a href="{href}"{cls}>{html.escape(text)}' + (f'<span class="idea">{html.escape(idea)}</span>' if idea else '')
                + '</a>')
    items = [a('index.html', 'Overview', '', ' class="here"' if here == 'index' else '')]
    for r in rows:
        short = re.sub(r'`', '', r['idea'])
        items.append(a(f'{page(r["name"])}', r['name'], short[:90] + ('…' if len(short) > 90 else ''),
                       ' class="here"' if r['name'] == here else ''))
    return f'{NAV_CSS}\n<nav class="pmx"><h1><a href="index.html">{html.escape(title)}</a></h1>{"".join(items)}</nav>'


def page(name: str) -> str: return name.replace('/', '__') + '.html'


def mathjax(out: Path) -> str | None:
    "Copy MathJax 2 (from the `jupyter-server-mathjax` package, if installed) into `out/mathjax`; its URL, or None."
    try: import jupyter_server_mathjax
    except ImportError: return None
    import shutil
    dst = out / 'mathjax'
    if not (dst / 'MathJax.js').exists():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / 'static', dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns('localization'))
    return 'mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe'


# nbconvert's lab page without what it would fetch from the network: require.js (nothing here needs it), the mermaid
# loader (no diagrams), the widget manager (widgets are static, `static_widgets`), MathJax unless it is local
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}
{%- if resources.mathjax_url and '//' not in resources.mathjax_url -%}{{ super() }}{%- endif -%}
{%- endblock html_head_js_mathjax -%}
"""


def render(nb, name: str, title: str, rows: list[dict], names: set[str], mathjax_url: str | None = None) -> str:
    "HTML of a display-ready notebook with the navigation; links to sibling notebooks point to their pages."
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    static_widgets(nb)
    exporter = HTMLExporter(template_name='lab', template_file='pmx-offline.html.j2', mathjax_url=mathjax_url or '',
                            extra_loaders=[DictLoader({'pmx-offline.html.j2': OFFLINE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': name}})
    body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m[1]}>\n{nav(title, rows, name)}{WIDGET_CSS}', body, count=1)
    def relink(m):
        target = m[2].split('#')[0]
        stem = target[:-6].lstrip('./') if target.endswith('.ipynb') else None
        return f'{m[1]}{page(stem)}{m[2][len(target):]}"' if stem in names else m[0]
    body = re.sub(r'(href=")([^"]+\.ipynb(?:#[^"]*)?)"', relink, body)
    # inline `01_icbhi`-style names of notebooks become links to their pages
    return re.sub(r'<code>([\w/]+)</code>', lambda m: f'<a href="{page(m[1])}"><code>{m[1]}</code></a>'
                  if m[1] in names and m[1] != name else m[0], body)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def default_jobs() -> int:
    "Notebooks at once by default: one per core, at most 4 (most of a notebook's time is one thread)."
    return min(4, cores())


FIRST = ('19_train',)   # started first when notebooks run side by side (--jobs): others wait for what it trains


def build(out: Path, only: list[str] | None = None, jobs: int = 1, timeout: int = 600, nbs: Path = NBS,
          log=print, all_cells: bool = False) -> dict:
    "Execute and render the index and the notebooks of its table (or `only` those) into `out`; returns the manifest."
    index = nbs / 'index.ipynb'
    rows = notebook_table(index)
    names = {r['name'] for r in rows}
    if only:
        unknown = sorted(set(only) - names - {'index'})
        if unknown: raise SystemExit(f'{index}: no notebook {unknown} in its table; known: {", ".join(sorted(names))}')
    todo = [r['name'] for r in rows if not only or r['name'] in only]
    todo.sort(key=lambda n: n not in FIRST)      # the course model's trainer first: 20-22 wait for its model
    threads = max(1, cores() // jobs) if jobs > 1 else None
    out.mkdir(parents=True, exist_ok=True)
    title = nbformat.read(index, as_version=4).cells[0].source.lstrip('# ').splitlines()[0]
    mpath = out / 'manifest.json'
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest['notebooks'] = [r['name'] for r in rows]
    skip = set() if all_cells else test_flags(nbs.parent / 'settings.ini')
    mj = mathjax(out)  # offline maths; without it no MathJax (TeX shows as written)

    def one(name: str) -> tuple[str, dict]:
        t0 = time.perf_counter()
        src = nbs / f'{name}.ipynb'
        nb = execute(src, timeout, skip=skip, threads=threads) if name != 'index' else nbformat.read(src, as_version=4)
        secs = time.perf_counter() - t0
        figs = n_figures(nb)
        hidden = [c.source for c in nb.cells if 'hide' in directives(c.source)]
        shown = for_display(nb)
        widgets = static_widgets(shown)
        scrub_paths(shown)
        text = render(shown, name, title, rows, names, mj)
        tmp = out / f'.{page(name)}.tmp'
        tmp.write_text(text, encoding='utf-8')
        tmp.replace(out / page(name))
        log(f'[docs] {name}: {secs:.1f} s, {figs} figures -> {out / page(name)}')
        return name, dict(page=page(name), figures=figs, audio=n_audio(shown), widgets=widgets, seconds=round(secs, 2),
                          hidden_cells=len(hidden), hidden_code=[h for h in hidden if len(h.strip()) > 20])

    t0 = time.perf_counter()
    results = [one('index')]
    with ThreadPoolExecutor(max(1, jobs)) as ex: results += list(ex.map(one, todo))
    manifest.setdefault('pages', {}).update(dict(results))
    manifest['seconds'] = round(time.perf_counter() - t0, 1)
    tmp = out / '.manifest.json.tmp'
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(mpath)
    log(f'[docs] {len(results)} pages in {manifest["seconds"]} s -> {out / "index.html"}')
    return manifest


NET_TAG = re.compile(r'<(script|link)\b[^>]*?\b(?:src|href)\s*=\s*["\']?((?:https?:)?//[^"\'\s>]+)', re.I)
INLINE_SCRIPT = re.compile(r'<script\b([^>]*)>(.*?)</script>', re.S | re.I)
STDERR = re.compile(r'<div[^>]*data-mime-type="application/vnd\.jupyter\.stderr"[^>]*>(.*?)</div>', re.S)
WARNING = re.compile(r'\b\w*Warning\b|\bWARNING\b')


def local_paths() -> tuple[str, ...]:
    "Absolute paths of this machine that must not show in a page: /tmp/, /work/, the repository, the home folder."
    return tuple(dict.fromkeys(['/tmp/', '/work/', f'{ROOT}/', f'{Path.home()}/']))


def offline_problems(p: Path, text: str, paths: tuple[str, ...] = ()) -> list[str]:
    "What keeps a page from being offline and clean: network scripts/styles, live widgets, warnings, local paths."
    problems = [f'{p}: <{t}> loads {url!r} from the network' for t, url in NET_TAG.findall(text)]
    for attrs, body in INLINE_SCRIPT.findall(text):
        if 'src=' in attrs or 'application/vnd.jupyter' in attrs: continue
        urls = re.findall(r'(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"\'`)]*', body)
        if urls: problems.append(f'{p}: an inline script refers to the network ({urls[0]!r})')
    if WIDGET_VIEW in text or WIDGET_STATE in text:
        problems.append(f'{p}: a widget shows no static view (its view needs a widget manager from the network)')
    for block in STDERR.findall(text):
        w = WARNING.search(html.unescape(re.sub(r'<[^>]+>', '', block)))
        if w: problems.append(f'{p}: a cell prints a warning ({w[0]}: '
                              f'{html.unescape(re.sub(r"<[^>]+>", "", block)).strip().splitlines()[0][:100]!r})')
    plain = DATA_URI.sub('data:', text)
    for path in paths or local_paths():
        i = plain.find(path)
        if i >= 0:
            around = html.unescape(re.sub(r'<[^>]+>', '', plain[max(0, i - 60):i + 80])).replace('\n', ' ')
            problems.append(f'{p}: a local absolute path {path!r} shows (…{around.strip()[:140]}…)')
    return problems


def check(out: Path, no_figures: tuple[str, ...] = ('27_cli', '28_main')) -> list[str]:
    """Problems with a built site (empty when fine): missing pages, figures or audio, broken links, visible directives,
    anything loaded from the network, live widgets, warnings, local paths."""
    mpath = out / 'manifest.json'
    if not mpath.exists(): return [f'{mpath}: no manifest; build the docs first (python tools/docs.py --out {out})']
    m = json.loads(mpath.read_text())
    problems = []
    for name in ['index'] + m['notebooks']:
        p = out / page(name)
        info = m['pages'].get(name)
        if not p.exists() or info is None:
            problems.append(f'{p}: missing (no page for nbs/{name}.ipynb)'); continue
        text = p.read_text(encoding='utf-8')
        imgs = len(IMG.findall(text))
        if imgs < info['figures']:
            problems.append(f'{p}: {imgs} embedded images, but the executed notebook produced {info["figures"]}')
        players = len(AUDIO.findall(text))
        if players < info.get('audio', 0):
            problems.append(f'{p}: {players} audio players, but the executed notebook produced {info["audio"]}')
        problems += offline_problems(p, text)
        if re.match(r'\d\d_', Path(name).name) and name not in no_figures and info['figures'] == 0:
            problems.append(f'{p}: nbs/{name}.ipynb produced no figure (executed with the inline backend)')
        code = ' '.join(re.findall(r'<pre>(.*?)</pre>', text, re.S))
        if re.search(r'#\s*\|\s*(export|hide|default_exp)', html.unescape(re.sub(r'<[^>]+>', '', code))):
            problems.append(f'{p}: an nbdev directive (#| ...) shows in the code')
        plain = html.unescape(re.sub(r'<[^>]+>', '', code))
        for h in info.get('hidden_code', []):
            body = '\n'.join(l for l in h.splitlines() if not DIRECTIVE.match(l)).strip()
            # the whole hidden cell showing, not one common line of it (a visible cell may import the same module)
            if len(body) > 20 and body in plain:
                problems.append(f'{p}: a #| hide cell shows ({body.splitlines()[0][:60]!r})')
        for href in re.findall(r'href="([^"#?]+)(?:[#?][^"]*)?"', text):
            if re.match(r'^[a-z]+:', href) or href.startswith('//'): continue
            if not (out / href).exists(): problems.append(f'{p}: link {href!r} does not resolve in {out}')
    if not (out / 'index.html').exists(): problems.append(f'{out / "index.html"}: missing')
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT / '_docs'), help='output folder (default: _docs)')
    ap.add_argument('--only', nargs='+', help='notebook names of the index table to build (default: all)')
    ap.add_argument('--jobs', type=int, default=default_jobs(),
                    help=f'notebooks executed at once, each kernel with its share of the cores (default: the cores, at '
                         f'most 4: {default_jobs()} here; measured on 2 cores: the site in half the time of one at once)')
    ap.add_argument('--timeout', type=int, default=900, help='seconds per cell (default 900)')
    ap.add_argument('--all-cells', action='store_true', help="also run cells flagged with settings.ini's tst_flags")
    ap.add_argument('--check', metavar='DIR', help='check a built site instead of building')
    ap.add_argument('--no-figures', nargs='*', default=['27_cli', '28_main'], help='numbered notebooks allowed to have no figure')
    a = ap.parse_args(argv)
    if a.check:
        problems = check(Path(a.check), tuple(a.no_figures))
        for p in problems: print(p, file=sys.stderr)
        if problems: sys.exit(f'[docs] {len(problems)} problems in {a.check}')
        m = json.loads((Path(a.check) / 'manifest.json').read_text())
        print(f'[docs] {a.check}: {len(m["pages"])} pages, {sum(p["figures"] for p in m["pages"].values())} figures, '
              f'{sum(p.get("audio", 0) for p in m["pages"].values())} audio players, links ok, offline, no warning '
              'or local path')
        return
    build(Path(a.out), a.only, a.jobs, a.timeout, all_cells=a.all_cells)


if __name__ == '__main__':
    main()
