"""`patchmix prepare` under faults: kill -9 mid-build, a full disk, a damaged cache.

Run: python -m pytest -q tests/test_faults_prepare.py
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patchmix_nb.cli import main
from patchmix_nb.features import TMP_PREFIX, build_cache, load_cache, remove_stale_builds
from patchmix_nb.dataset import load_index
from patchmix_nb.synthetic import make_synthetic

ROOT = Path(__file__).resolve().parents[1]
CLI = 'import sys; from patchmix_nb.cli import main; sys.exit(main())'


def env():
    return {**os.environ, 'PYTHONPATH': f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", 'HF_HUB_OFFLINE': '1'}


def patchmix(*args, pre: str = '', timeout: int = 300) -> subprocess.CompletedProcess:
    "Run the CLI in a fresh interpreter (a signal would show as a negative return code)."
    return subprocess.run([sys.executable, '-c', pre + CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env())


def children(pid: int) -> list[int]:
    "Live (non-zombie) processes whose parent is `pid`."
    out = []
    for p in Path('/proc').iterdir():
        if not p.name.isdigit(): continue
        try: stat = (p / 'stat').read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        if int(stat[1]) == pid and stat[0] != 'Z': out.append(int(p.name))
    return out


def alive(pid: int) -> bool:
    try: return (Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]) != 'Z'
    except OSError: return False


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('syn') / 'set', recordings=48, seed=1)


@pytest.fixture(scope='module')
def clean(data, tmp_path_factory):
    "A clean build to compare with."
    return build_cache(load_index(data), tmp_path_factory.mktemp('clean'), workers=1)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "6 recordings: a cache of ~8 MB, quick to build."
    d = make_synthetic(tmp_path_factory.mktemp('tiny') / 'set', recordings=6, seed=2)
    return d, build_cache(load_index(d), tmp_path_factory.mktemp('tinyclean'), workers=1)


def prepare(data, cache, workers=1) -> int:
    return main(['prepare', str(data), '--cache', str(cache), '--workers', str(workers), '--no-progress'])


needs_proc = pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='needs Linux /proc')


@needs_proc
def test_kill_9_leaves_no_orphans_and_next_start_cleans_up(data, clean, tmp_path):
    cache = tmp_path / 'cache'
    p = subprocess.Popen([sys.executable, '-c', CLI, 'prepare', data, '--cache', cache, '--workers', '2',
                          '--no-progress'], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kids, t0 = [], time.time()
    while time.time() - t0 < 120 and p.poll() is None:  # wait until both pool workers compute
        kids = children(p.pid)
        if len(kids) >= 2 and any(cache.glob(f'{TMP_PREFIX}*/features.npy')): break
        time.sleep(0.01)
    if p.poll() is not None:
        pytest.skip(f'the build finished (rc {p.returncode}) before it could be killed')
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL and len(kids) >= 2
    deadline = time.time() + 10
    while any(alive(k) for k in kids) and time.time() < deadline: time.sleep(0.05)
    assert [k for k in kids if alive(k)] == [], 'pool workers outlived their parent'
    left = list(cache.glob(f'{TMP_PREFIX}*'))
    assert len(left) == 1 and not (cache / clean.path.name).exists()  # the dead build's temp, no final folder
    # the next start removes the dead build's temp folder and builds the same cache as a clean build
    rc = main(['prepare', str(data), '--cache', str(cache), '--workers', '2', '--no-progress'])
    assert rc == 0
    assert sorted(p.name for p in cache.iterdir()) == [clean.path.name]
    again = load_cache(cache / clean.path.name)
    assert np.array_equal(np.asarray(again.features), np.asarray(clean.features))
    cols = ['stem', 'start', 'end', 'label']
    pd.testing.assert_frame_equal(again.cycles[cols], clean.cycles[cols].reset_index(drop=True), check_dtype=False)


def test_concurrent_build_temp_is_kept(tmp_path):
    "A temp folder whose owner is alive (here: this process) is not removed; one of a dead process is."
    live = tmp_path / f'{TMP_PREFIX}abc-{os.getpid()}-x'
    live.mkdir()
    (live / 'owner.json').write_text(json.dumps(dict(host=os.uname().nodename, pid=os.getpid(),
                                                     start=Path(f'/proc/{os.getpid()}/stat').read_text()
                                                     .rsplit(')', 1)[1].split()[19] if Path('/proc').exists() else None)))
    dead_pid = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                              text=True).stdout.strip()
    dead = tmp_path / f'{TMP_PREFIX}abc-{dead_pid}-y'
    dead.mkdir()
    (dead / 'owner.json').write_text(json.dumps(dict(host=os.uname().nodename, pid=int(dead_pid), start='1')))
    assert remove_stale_builds(tmp_path) == [dead]
    assert live.is_dir() and not dead.exists()


@pytest.fixture
def small_fs(tmp_path):
    "A 3 MB tmpfs (the cache of the 6-recording set needs ~8 MB); skipped where mounting is not allowed."
    mnt = tmp_path / 'fs'
    mnt.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f'cannot mount a small tmpfs here: {(r.stderr or r.stdout).strip()}')
    try:
        yield mnt
    finally:
        subprocess.run(['umount', '-l', str(mnt)], capture_output=True)


@pytest.mark.parametrize('workers', [1, 2])
def test_full_disk_is_one_line_exit_2(tiny, small_fs, workers, capsys):
    "The space is reserved before any row is computed: a full disk is one line with the space needed (old: SIGBUS)."
    data, _ = tiny
    cache = small_fs / 'cache'
    for attempt in range(2):  # and the next run on the same full disk: the same line, not a traceback
        capsys.readouterr()
        assert prepare(data, cache, workers) == 2
        msg = capsys.readouterr().err.strip().splitlines()
        assert len(msg) == 1 and msg[0].startswith('patchmix prepare: error: ') and str(cache) in msg[0], msg
        assert 'no space left on device: the feature cache needs' in msg[0] and 'MB free' in msg[0]
        assert list(cache.iterdir()) == []  # no temp left behind


@pytest.mark.parametrize('workers', [1, 2])
def test_full_disk_during_row_writes(tiny, small_fs, workers, capsys):
    """Where space cannot be reserved up front, the rows' writes hit ENOSPC: an error line, never a signal.
    (Old: SIGBUS, exit 135, with one worker; 'process pool was terminated abruptly' with two.) workers=2 runs the
    CLI in a fresh interpreter, so a signal would show as a negative return code."""
    data, _ = tiny
    cache = small_fs / 'cache'
    if workers == 1:
        import patchmix_nb.features as F
        reserve, F._reserve = F._reserve, lambda p, n: os.truncate(p, n)
        try: rc = prepare(data, cache, 1)
        finally: F._reserve = reserve
        err = capsys.readouterr().err
    else:
        pre = 'import os, patchmix_nb.features as F; F._reserve = lambda p, n: os.truncate(p, n); '
        r = patchmix('prepare', data, '--cache', cache, '--workers', workers, '--no-progress', pre=pre)
        rc, err = r.returncode, r.stderr
    assert rc == 2, (rc, err[-2000:])
    msg = err.strip().splitlines()
    assert len(msg) == 1 and 'no space left on device' in msg[0] and 'features.npy' in msg[0], err
    assert list(cache.iterdir()) == []


def _damage_truncate(f: Path): f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
def _damage_shape(f: Path):
    a = np.load(f, mmap_mode='r')
    np.save(f, np.zeros((a.shape[0] - 1, *a.shape[1:]), a.dtype))
def _damage_garbage(f: Path): f.write_bytes(b'\x00' * 64)


@pytest.mark.parametrize('damage', [_damage_truncate, _damage_shape, _damage_garbage])
def test_damaged_features_are_rebuilt_with_a_notice(damage, tiny, tmp_path, capsys):
    "Old: 'mmap length is greater than file size', no path, no rebuild."
    data, clean = tiny
    cache = tmp_path / 'cache'
    assert prepare(data, cache) == 0
    f = cache / clean.path.name / 'features.npy'
    damage(f)
    capsys.readouterr()
    assert prepare(data, cache) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and 'damaged feature cache' in err[0] and 'rebuilding' in err[0], err
    c = load_cache(cache / clean.path.name)
    assert np.array_equal(np.asarray(c.features), np.asarray(clean.features))
    assert sorted(p.name for p in cache.iterdir()) == [clean.path.name]


def test_damaged_manifest_is_rebuilt(tiny, tmp_path, capsys):
    data, clean = tiny
    cache = tmp_path / 'cache'
    assert prepare(data, cache) == 0
    (cache / clean.path.name / 'manifest.json').write_text('{"params": ')
    capsys.readouterr()
    assert prepare(data, cache) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'manifest.json' in err[0] and 'rebuilding' in err[0], err
