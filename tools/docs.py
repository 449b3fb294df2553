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

`--check` fails when a notebook of the table has no page, a page lacks the figures its notebook produced, a numbered
notebook (other than those in --no-figures, default `27_cli` and `28_main`, the command line) produced none, a local link does not resolve, or an
nbdev directive or a hidden cell's code shows.
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


def execute(path: Path, timeout: int = 600, kernel: str = 'python3', skip: set[str] = frozenset()):
    "Run a notebook in its own folder with the inline matplotlib backend (cells flagged with `skip` are shown, not run)."
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    skipped = {i: c.source for i, c in enumerate(nb.cells) if c.cell_type == 'code' and set(directives(c.source)) & skip}
    for i in skipped: nb.cells[i].source = ''
    NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={'metadata': {'path': str(path.parent)}}).execute(
        env=dict(os.environ, MPLBACKEND=INLINE))  # figures become image/png outputs
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


def render(nb, name: str, title: str, rows: list[dict], names: set[str], mathjax_url: str | None = None) -> str:
    "HTML of a display-ready notebook with the navigation; links to sibling notebooks point to their pages."
    from nbconvert import HTMLExporter
    kw = dict(mathjax_url=mathjax_url) if mathjax_url else {}
    body, _ = HTMLExporter(template_name='lab', **kw).from_notebook_node(nb, resources={'metadata': {'name': name}})
    body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m[1]}>\n{nav(title, rows, name)}', body, count=1)
    def relink(m):
        target = m[2].split('#')[0]
        stem = target[:-6].lstrip('./') if target.endswith('.ipynb') else None
        return f'{m[1]}{page(stem)}{m[2][len(target):]}"' if stem in names else m[0]
    body = re.sub(r'(href=")([^"]+\.ipynb(?:#[^"]*)?)"', relink, body)
    # inline `01_icbhi`-style names of notebooks become links to their pages
    return re.sub(r'<code>([\w/]+)</code>', lambda m: f'<a href="{page(m[1])}"><code>{m[1]}</code></a>'
                  if m[1] in names and m[1] != name else m[0], body)


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
    out.mkdir(parents=True, exist_ok=True)
    title = nbformat.read(index, as_version=4).cells[0].source.lstrip('# ').splitlines()[0]
    mpath = out / 'manifest.json'
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest['notebooks'] = [r['name'] for r in rows]
    skip = set() if all_cells else test_flags(nbs.parent / 'settings.ini')
    mj = mathjax(out)  # offline maths; without it the pages link MathJax's CDN (TeX shows as written offline)

    def one(name: str) -> tuple[str, dict]:
        t0 = time.perf_counter()
        src = nbs / f'{name}.ipynb'
        nb = execute(src, timeout, skip=skip) if name != 'index' else nbformat.read(src, as_version=4)
        secs = time.perf_counter() - t0
        figs = n_figures(nb)
        hidden = [c.source for c in nb.cells if 'hide' in directives(c.source)]
        text = render(for_display(nb), name, title, rows, names, mj)
        tmp = out / f'.{page(name)}.tmp'
        tmp.write_text(text, encoding='utf-8')
        tmp.replace(out / page(name))
        log(f'[docs] {name}: {secs:.1f} s, {figs} figures -> {out / page(name)}')
        return name, dict(page=page(name), figures=figs, seconds=round(secs, 2), hidden_cells=len(hidden),
                          hidden_code=[h for h in hidden if len(h.strip()) > 20])

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


def check(out: Path, no_figures: tuple[str, ...] = ('27_cli', '28_main')) -> list[str]:
    "Problems with a built site (empty when fine): missing pages, missing figures, broken links, visible directives."
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
    ap.add_argument('--jobs', type=int, default=1, help='notebooks executed at once (default 1)')
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
        print(f'[docs] {a.check}: {len(m["pages"])} pages, {sum(p["figures"] for p in m["pages"].values())} figures, links ok')
        return
    build(Path(a.out), a.only, a.jobs, a.timeout, all_cells=a.all_cells)


if __name__ == '__main__':
    main()
