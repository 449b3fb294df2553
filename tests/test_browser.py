"""A real browser test of the recording browser: JupyterLab on 127.0.0.1, headless Chromium driven by Selenium.

JupyterLab serves a temporary folder holding a copy of nbs/07_explore.ipynb; Chromium opens it, runs it through
Run → Run All Cells, then changes the recording and the cycle in the widget and checks that the figure (the PNG bytes
behind the image) and the audio (the WAV bytes behind the players) changed, with the cycle's player holding exactly
the cycle's samples; then narrows the filters until nothing matches and relaxes one, checking that the status line
leaves its red "no recording matches" for the recording drawn again. Screenshots go to $PATCHMIX_SCREENSHOTS (default: pytest's tmp dir); their paths are printed.

Needs Debian's `chromium` and `chromium-driver` (`scripts/install-browser`); skips with the reason when absent.
`PATCHMIX_BROWSER_DATA=/path/to/ICBHI` runs the notebook on that folder instead of the synthetic default.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'07_explore.ipynb'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
DRIVER = shutil.which('chromedriver')

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason='chromium/chromedriver not installed (run scripts/install-browser)')

# the WAV bytes, PNG bytes, their sizes and SHA-256 of a blob: URL, read inside the page
FETCH = """const [src, done] = arguments;
fetch(src).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b).then(h => done(
  [b.byteLength, Array.from(new Uint8Array(h)).map(x => x.toString(16).padStart(2, '0')).join('')])))
  .catch(e => done(['error', String(e)]));"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _notebook(dst: Path, data_dir: str | None) -> Path:
    "Copy 07_explore into `dst`, with `data_dir` injected after the parameters cell (as papermill does)."
    nb = json.loads(NB.read_text())
    if data_dir:
        i = next(i for i, c in enumerate(nb['cells']) if 'parameters' in c['metadata'].get('tags', []))
        nb['cells'].insert(i + 1, dict(cell_type='code', execution_count=None, id='injected', outputs=[],
                                       metadata={'tags': ['injected-parameters']}, source=[f'data_dir = {data_dir!r}']))
    out = dst/NB.name
    out.write_text(json.dumps(nb, indent=1))
    return out


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on a free port of 127.0.0.1, token disabled, serving a temporary root: (url, root)."
    pytest.importorskip('selenium')
    tmp = tmp_path_factory.mktemp('lab')
    root, cfg = tmp/'root', tmp/'jupyter'
    root.mkdir()
    _notebook(root, os.environ.get('PATCHMIX_BROWSER_DATA'))
    port = _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(cfg/'runtime'), JUPYTER_CONFIG_DIR=str(cfg/'config'),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
               MPLBACKEND='module://matplotlib_inline.backend_inline')
    settings = cfg/'settings'/'@jupyterlab'/'apputils-extension'
    settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    # every cell in the page (JupyterLab 4 leaves cells out of view unrendered by default)
    (cfg/'settings'/'@jupyterlab'/'notebook-extension').mkdir(parents=True)
    (cfg/'settings'/'@jupyterlab'/'notebook-extension'/'tracker.jupyterlab-settings').write_text(
        json.dumps({'windowingMode': 'none'}))
    log = open(tmp/'jupyterlab.log', 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
         '--IdentityProvider.token=', '--ServerApp.password=', f'--ServerApp.root_dir={root}',
         f'--LabApp.user_settings_dir={cfg/"settings"}', f'--LabApp.workspaces_dir={cfg/"workspaces"}',
         '--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
         '--LabApp.extension_manager=readonly'] + (['--allow-root'] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f'{url}/api/status', timeout=1)
                break
            except OSError:
                if proc.poll() is not None: break
                time.sleep(0.5)
        else:
            pytest.fail(f'JupyterLab did not answer on {url} within 60 s (log: {tmp/"jupyterlab.log"})')
        if proc.poll() is not None:
            pytest.fail(f'JupyterLab exited with {proc.returncode}: {(tmp/"jupyterlab.log").read_text()[-2000:]}')
        yield url, root
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    webdriver = pytest.importorskip('selenium.webdriver')
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', '--window-size=1500,1200', '--autoplay-policy=user-gesture-required',
                 f'--user-data-dir={tmp_path_factory.mktemp("chromium")}'):
        opts.add_argument(flag)
    opts.binary_location = CHROMIUM
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_script_timeout(30)
    try: yield d
    finally: d.quit()


@pytest.fixture(scope='module')
def shots(tmp_path_factory):
    d = Path(os.environ.get('PATCHMIX_SCREENSHOTS') or tmp_path_factory.mktemp('screenshots'))
    d.mkdir(parents=True, exist_ok=True)
    return d


_DRIVER = {}

def _wait(what: str, f, timeout: float = 120, every: float = 0.2):
    "Poll `f` until it returns something truthy; fail with `what` (and a screenshot) after `timeout` seconds."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            v = f()
            if v: return v
        except Exception:  # stale elements while JupyterLab re-renders
            pass
        time.sleep(every)
    shot = ''
    if 'driver' in _DRIVER:
        shot = str(_DRIVER['shots']/'timeout.png')
        _DRIVER['driver'].save_screenshot(shot)
    pytest.fail(f'timed out after {timeout:.0f} s waiting for {what} (screenshot: {shot})')


def test_recording_browser_in_jupyterlab(lab, driver, shots, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from patchmix_nb.dataset import load_index
    url, root = lab
    _DRIVER.update(driver=driver, shots=shots)
    log, paths, t_start = [], [], time.monotonic()

    def shot(name, el=None):
        p = shots/f'{name}.png'
        (el.screenshot(str(p)) if el is not None else driver.save_screenshot(str(p)))
        paths.append(p)

    def xp(path): return driver.find_element(By.XPATH, path)

    # open the notebook; its kernel starts by itself
    driver.get(f'{url}/lab/tree/{NB.name}')
    _wait('the notebook to open', lambda: driver.find_elements(By.CSS_SELECTOR, '.jp-Notebook .jp-Cell'), 90)
    _wait('the kernel to be idle', lambda: driver.find_elements(
        By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]'), 90)
    time.sleep(3)  # JupyterLab writes the kernel's kernelspec/language_info into the notebook just after connecting
    dirty = bool(driver.find_elements(By.CSS_SELECTOR, '.lm-TabBar-tab.jp-mod-dirty'))
    log.append(f'opened, kernel idle in {time.monotonic() - t_start:.1f} s; tab marked modified on open: {dirty}')

    _wait('the kernel status "Idle"', lambda: 'Idle' in driver.find_element(By.CSS_SELECTOR, '.jp-StatusBar-Widget').text
          or 'Idle' in driver.find_element(By.ID, 'jp-main-statusbar').text, 60)
    # Run → Run All Cells, through the menu (again if no cell started: a click can land before the kernel is wired)
    t0 = time.monotonic()
    n_code = sum(c['cell_type'] == 'code' for c in json.loads((root/NB.name).read_text())['cells'])
    def prompts(): return [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, '.jp-CodeCell .jp-InputArea-prompt')]
    for attempt in range(3):
        xp("//div[contains(@class,'lm-MenuBar-itemLabel') and normalize-space()='Run']").click()
        _wait('the Run menu', lambda: xp("//div[contains(@class,'lm-Menu-itemLabel') and normalize-space()='Run All Cells']")).click()
        t1 = time.monotonic()
        while time.monotonic() - t1 < 15 and all(p in ('[ ]:', '') for p in prompts()): time.sleep(0.25)
        if not all(p in ('[ ]:', '') for p in prompts()): break
        log.append(f'Run All Cells started nothing (attempt {attempt + 1}): clicking again')

    def all_run():
        p = prompts()
        return len(p) == n_code and all(x not in ('[ ]:', '[*]:', '') for x in p) \
            and driver.find_elements(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    _wait('Run All Cells to finish', all_run, 300, 0.5)
    errors = driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
    assert not errors, errors[0].text[:2000]
    log.append(f'Run All Cells: {n_code} code cells in {time.monotonic() - t0:.1f} s')

    # the widget: its controls by their labels
    box = _wait('the browser widget', lambda: xp("//div[contains(@class,'widget-vbox')][.//label[normalize-space()='recording']]"))
    def select(label): return Select(box.find_element(By.XPATH, f".//div[contains(@class,'widget-dropdown')][label[normalize-space()='{label}']]//select"))
    status = box.find_element(By.XPATH, ".//div[contains(@class,'widget-html')][contains(., 'drawn in') or contains(., '⏳')]")
    img = box.find_element(By.CSS_SELECTOR, '.widget-image')
    audios = box.find_elements(By.CSS_SELECTOR, 'audio')
    assert len(audios) == 2, 'expected two players: the recording and one cycle'

    def blob(el):
        v = driver.execute_async_script(FETCH, el.get_attribute('src'))
        assert v[0] != 'error', v
        return tuple(v)

    def state(): return dict(status=status.text, image=blob(img), recording=blob(audios[0]), width=img.size['width'])
    log.append(f'widget ready, {img.size["width"]} px wide')
    driver.execute_script('arguments[0].scrollIntoView()', box)
    _wait('the widget to be drawn', lambda: 'drawn in' in status.text)
    s0 = state()
    shot('1-after-run-all')
    shot('1-widget', box)
    # the status line shows every text it takes (the busy indicator is short-lived)
    driver.execute_script("""const el = arguments[0]; window.__seen = [];
        new MutationObserver(() => window.__seen.push(el.innerText)).observe(el, {subtree: true, childList: true, characterData: true});""", status)

    # change the recording
    rec = select('recording')
    options = rec.options
    i = next(i for i, o in enumerate(options) if o.text != rec.first_selected_option.text)
    stem = options[i].text.split()[0]
    t0 = time.monotonic()
    rec.select_by_index(i)
    _wait(f'{stem} to be drawn', lambda: f'✔ {stem} ' in status.text and 'drawn in' in status.text, 60)
    s1 = _wait('the new image and audio', lambda: (lambda s: s['image'] != s0['image'] and s['recording'] != s0['recording'] and s)(state()), 30)
    log.append(f'recording {stem}: figure and audio changed in {time.monotonic() - t0:.2f} s')
    seen = driver.execute_script('return window.__seen')
    assert any('⏳' in t for t in seen), f'no busy indicator seen: {seen}'
    natural = driver.execute_script('return arguments[0].naturalWidth', img)
    assert natural == 2000 and 900 <= s1['width'] <= 1000, (natural, s1['width'])  # 2x pixels, never stretched
    shot('2-recording-changed', box)

    # pick cycle 3: the figure zooms, the cycle player holds that cycle alone, the recording player is unchanged
    cyc = select('cycle')
    t0 = time.monotonic()
    cyc.select_by_index(3)  # option 0 is the whole recording
    _wait('cycle 3 to be drawn', lambda: f'✔ {stem}, cycle 3' in status.text, 60)
    s2 = _wait('the zoomed image', lambda: (lambda s: s['image'] != s1['image'] and s)(state()), 30)
    cycle_audio = _wait('the cycle audio', lambda: (lambda b: b[0] > 44 and b)(blob(audios[1])), 30)
    log.append(f'cycle 3: figure and cycle audio changed in {time.monotonic() - t0:.2f} s')
    assert s2['recording'] == s1['recording']
    index = load_index(os.environ.get('PATCHMIX_BROWSER_DATA') or _synthetic_dir())
    c = index.cycles[index.cycles.stem == stem].sort_values('start').iloc[2]
    dur = index.recordings.set_index('stem').loc[stem, 'duration']
    n = int(min(c.end, dur) * 16000) - int(c.start * 16000)
    assert abs((cycle_audio[0] - 44) // 2 - n) <= 1, (cycle_audio, n)  # 16-bit samples of that cycle alone
    shot('3-cycle-zoomed', box)
    # previous / next
    t0 = time.monotonic()
    box.find_element(By.XPATH, ".//button[normalize-space()='next ▶']").click()
    _wait('the next recording', lambda: select('recording').first_selected_option.text.split()[0] != stem, 60)
    _wait('its drawing', lambda: 'drawn in' in status.text and stem + ' ' not in status.text, 60)
    log.append(f'next: {select("recording").first_selected_option.text.split()[0]} in {time.monotonic() - t0:.2f} s')
    shot('4-next', box)
    # relax a filter: a class, then a second filter that no recording meets (red status), then that one back to (all)
    from patchmix_nb.icbhi import CLASSES
    labels = index.cycles.groupby('stem').label.agg(set)
    rec = index.recordings[index.recordings.wav.notna()]
    k, col, val = next((k, c, v) for k in (2, 3, 1) for c in ('device', 'diagnosis') for v in sorted(set(rec[c]))
                       if not any(k in labels.get(x, ()) for x in rec.stem[rec[c] == v]))
    keep = [x for x in rec.stem if k in labels.get(x, ())]
    t0 = time.monotonic()
    select('class present').select_by_visible_text(CLASSES[k])
    _wait(f'the {len(keep)} recordings with a {CLASSES[k]} cycle', lambda: len(select('recording').options) == len(keep), 60)
    _wait('a drawing among them', lambda: '✔' in status.text and 'drawn in' in status.text
          and select('recording').first_selected_option.text.split()[0] in keep, 60)
    select(col).select_by_visible_text(val)
    _wait('the red status', lambda: 'no recording matches' in status.text, 60)
    shot('5-nothing-matches', box)
    counter = box.find_element(By.XPATH, ".//div[contains(@class,'widget-html')][contains(., ' of ')]")
    assert counter.text.startswith('– of 0'), counter.text
    select(col).select_by_visible_text('(all)')
    _wait('the status after relaxing', lambda: 'no recording matches' not in status.text and '✔' in status.text, 60)
    shown = select('recording').first_selected_option.text.split()[0]
    assert shown in keep and f'✔ {shown}' in status.text and 'drawn in' in status.text, status.text
    assert counter.text == f'{keep.index(shown) + 1} of {len(keep)} (of {len(rec)})', counter.text
    assert len(select('recording').options) == len(keep)
    log.append(f'filter {CLASSES[k]}, then {col}={val} (nothing), then {col} relaxed: status '
               f'{status.text!r} in {time.monotonic() - t0:.2f} s')
    shot('6-relaxed', box)
    log.append(f'total {time.monotonic() - t_start:.1f} s')
    with capsys.disabled():
        print('\n[browser] ' + '\n[browser] '.join(log))
        print('[browser] screenshots: ' + ', '.join(map(str, paths)))


def _synthetic_dir():
    from patchmix_nb.synthetic import ensure_synthetic
    return ensure_synthetic()
