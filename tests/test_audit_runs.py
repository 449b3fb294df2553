"""Issue 18, runs: one writer per run folder, a cache key over every byte of the audio, the data path of a run found
from anywhere, a torchrun batch refused before any work, one scheduler query per sweep poll."""
import json, os, shutil, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from patchmix_nb import runs as R
from patchmix_nb.config import make_config
from patchmix_nb.core import proc_start
from patchmix_nb.devices import check_batch_split
from patchmix_nb.runs import LOCK, RunFolder, RunFolderBusy
from patchmix_nb.train import start_run, train

SMOKE = dict(progress=False, device='cpu', precision='fp32', max_steps=1)
HOLD = ("import sys, time; from patchmix_nb.runs import RunFolder; RunFolder(sys.argv[1]).lock(); "
        "print('held', flush=True); time.sleep(120)")


def _dead_holder(folder: Path) -> int:
    "A lock left by a process that has ended (its pid and start time, as RunFolder.lock writes them)."
    p = subprocess.Popen(['sleep', '30'])
    lock = {'host': socket.gethostname(), 'pid': p.pid, 'start': proc_start(p.pid), 'since': 0}
    p.kill()
    p.wait()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps(lock))
    return p.pid


def _holder(folder: Path) -> subprocess.Popen:
    "Another process that holds `folder` through RunFolder.lock (as a second `patchmix train --out` would)."
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
    assert p.stdout.readline().strip() == 'held'
    return p


# 1. one writer per run folder

def test_a_second_writer_refuses_and_leaves_the_folder_alone(tmp_path):
    out = tmp_path / 'run'
    holder = _holder(out)
    try:
        with pytest.raises(RunFolderBusy) as e:
            train(make_config('smoke', out_dir=str(out), **SMOKE), log=None)
        msg = str(e.value)
        assert '\n' not in msg and str(out) in msg and f"pid {holder.pid}" in msg, msg
        assert sorted(p.name for p in out.iterdir()) == [LOCK]                    # nothing of a run was written
        assert json.loads((out / LOCK).read_text())['pid'] == holder.pid           # the holder's lock is kept
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_writers_lock_is_taken_over(tmp_path):
    out = RunFolder(tmp_path / 'run')
    pid = _dead_holder(out.path)
    said = []
    out.lock(log=said.append)
    assert len(said) == 1 and 'took over the lock' in said[0] and f"pid {pid}" in said[0], said
    assert json.loads((out / LOCK).read_text())['pid'] == os.getpid()
    out.unlock()
    assert not (out / LOCK).exists()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    "A caller holding the folder (a notebook that trains twice) may lock it again; the last release removes .lock."
    out = RunFolder(tmp_path / 'run')
    out.lock()
    out.lock()
    assert json.loads((out / LOCK).read_text())['pid'] == os.getpid()
    out.unlock()
    assert (out / LOCK).exists()
    out.unlock()
    assert not (out / LOCK).exists() and not out.path.exists()        # the lock made the folder; nothing else there


def test_a_refused_start_leaves_no_lock_and_no_folder(tmp_path):
    cfg = make_config('smoke', out_dir=str(tmp_path / 'none'), **SMOKE)
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        train(cfg, resume=True, log=None)
    assert not (tmp_path / 'none').exists() and not R._HELD


# 4. a torchrun batch that does not split: refused before any work

def test_batch_that_does_not_split_is_refused_before_any_work(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr('patchmix_nb.train.load_data', lambda *a, **k: loads.append(1))
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    cfg = make_config('smoke', out_dir=str(tmp_path / 'r'), batch_size=7, **SMOKE)
    with pytest.raises(ValueError, match=r"^batch_size 7 does not split over the 2 processes \(torchrun "
                                         r"--nproc_per_node 2\); expected a multiple of 2, e.g. 6 or 8$"):
        start_run(cfg, log=None)
    assert not loads and not (tmp_path / 'r').exists()
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setattr('patchmix_nb.devices.time.sleep', lambda s: None)
    with pytest.raises(SystemExit) as e:                                           # the others: silent, non-zero
        start_run(cfg, log=None)
    assert e.value.code == 2 and not loads
    check_batch_split(8)


TORCHRUN = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')


@pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_gloo_available(), reason='torchrun/gloo missing')
def test_torchrun_batch_that_does_not_split_is_one_line(tmp_path):
    r = subprocess.run([TORCHRUN, '--standalone', '--nproc_per_node', '2', '-m', 'patchmix_nb', 'train',
                        '--preset', 'smoke', '--device', 'cpu', '--batch-size', '7', '--out', str(tmp_path / 'r')],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    ours = [line for line in r.stderr.splitlines() if line.startswith('patchmix train')]
    assert r.returncode != 0, r.stderr
    assert ours == ["patchmix train: error: batch_size 7 does not split over the 2 processes (torchrun "
                    "--nproc_per_node 2); expected a multiple of 2, e.g. 6 or 8"], r.stderr
    assert r.stderr.count('Traceback (most recent call last)') <= 1          # torchrun's own report, none of ours
    assert not (tmp_path / 'r').exists()


# 5. sweep status at scale: one scheduler query per poll

def _sweep_folder(out: Path, n: int) -> None:
    "n planned runs, each submitted as a Slurm job (job id = its index); odd ones are still in the queue."
    from patchmix_nb.core import save_json
    for i in range(n):
        d = out / f"ce_seed{i}"
        save_json(make_config('smoke', seed=i).to_dict(), d / 'config.json')
        save_json({'name': d.name}, d / 'sweep.json')
        save_json({'job_id': str(i), 'executor': 'slurm', 'submitted': 200.}, d / '.job.json')
        if i < 4: save_json({'status': 'interrupted', 'finished': 100.}, d / 'execution.json')   # resubmitted


def test_sweep_status_asks_the_scheduler_once(tmp_path, monkeypatch):
    from patchmix_nb.sweep import monitor, sweep_status
    calls = []

    def fake_squeue(ids):
        calls.append(list(ids))
        return {i: 'PENDING' for i in ids if int(i) % 2}
    monkeypatch.setattr(R, 'squeue', fake_squeue)
    _sweep_folder(tmp_path, 40)
    runs, line = sweep_status(tmp_path)
    assert len(calls) == 1 and sorted(calls[0], key=int) == [str(i) for i in range(40)]
    assert runs.status.value_counts().to_dict() == {'pending': 20, 'queued': 18, 'interrupted': 2}
    assert line.startswith('[sweep] 0/40 done, 0 running, 0 failed, 40 queued')
    from patchmix_nb.launch import SlurmExecutor
    states = dict(zip(runs.name, runs.status))
    assert states['ce_seed1'] == 'pending' and states['ce_seed2'] == 'interrupted'
    assert not SlurmExecutor(tmp_path).finished(states) or shutil.which('squeue') is None

    class Done:                                              # an executor whose jobs ended after this poll
        parallel, poll, note = 1, 0., ''
        def finished(self, states): return True
    calls.clear()
    planned = [type('Run', (), {'name': d.name, 'folder': RunFolder(d)}) for d in sorted(tmp_path.glob('ce_*'))]
    monitor(planned, tmp_path, Done(), say=lambda *a: None)
    assert len(calls) == 1                                   # states, the summary and finished: one squeue call


# 2. stale audio: the cache key covers every byte

def test_one_sample_edited_in_place_changes_the_cache_key(tmp_path, monkeypatch):
    "The former key sampled 16 blocks of 4 KiB: a byte between them, with size and mtime kept, reused stale features."
    from patchmix_nb.dataset import load_index
    from patchmix_nb.features import cache_key, cache_manifest
    from patchmix_nb.synthetic import make_synthetic
    monkeypatch.setenv('PATCHMIX_HOME', str(tmp_path / 'home'))
    data = make_synthetic(tmp_path / 'icbhi', recordings=2, seed=3)
    key = cache_key(cache_manifest(load_index(data)))
    wav = Path(load_index(data).recordings.wav[0])
    st, b = wav.stat(), bytearray(wav.read_bytes())
    at = st.st_size // 16 + 2 * 4096                                    # between the 1st and 2nd sampled blocks
    assert at + 4096 < st.st_size * 2 // 16
    b[at] ^= 0x40
    wav.write_bytes(bytes(b))
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (wav.stat().st_size, wav.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert cache_key(cache_manifest(load_index(data))) != key


def test_the_digest_memo_is_used_only_when_the_stat_proves_the_file_unchanged(tmp_path, monkeypatch):
    from patchmix_nb import core
    f, memo = tmp_path / 'a.wav', tmp_path / 'memo.json'
    f.write_bytes(os.urandom(3 << 20))
    reads = []
    real = core.file_digest
    monkeypatch.setattr(core, 'file_digest', lambda p, *a: reads.append(p) or real(p, *a))
    monkeypatch.setattr(core, 'RACY_S', -1.0)                           # this fresh file counts as settled
    d = core.file_digests([f], memo)[str(f)]
    assert core.file_digests([f], memo)[str(f)] == d and len(reads) == 1 # memo: not read again
    st = f.stat()
    time.sleep(0.05)    # the kernel stamps ctime from a coarse clock (a tick is up to 10 ms): an edit in the same tick
    with open(f, 'r+b') as h:   # keeps it, which is why a file younger than RACY_S is never memoised (RACY_S=-1 here)
        h.seek(1 << 20)                                                 # in place; size and mtime restored
        h.write(b'\0')
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_ctime_ns != st.st_ctime_ns                       # the premise: the edit moved the ctime
    assert core.file_digests([f], memo)[str(f)] != d and len(reads) == 2 # the ctime moved: hashed again
    monkeypatch.setattr(core, 'RACY_S', 2.0)
    g = tmp_path / 'b.wav'
    g.write_bytes(b'x' * 10)
    core.file_digests([g], memo)
    assert str(g.resolve()) not in json.loads(memo.read_text())         # ctime too fresh to trust: not memoised


# 3. eval without --data, from another folder: the data the run trained on

def test_eval_from_another_folder_scores_the_training_data(tmp_path, monkeypatch):
    from patchmix_nb.inference import evaluate_run
    from patchmix_nb.synthetic import make_synthetic
    here, elsewhere = tmp_path / 'here', tmp_path / 'elsewhere'
    make_synthetic(here / 'icbhi', recordings=8, seed=1)
    make_synthetic(elsewhere / 'icbhi', recordings=2, seed=2)             # a decoy at the same relative path
    monkeypatch.chdir(here)
    _dead_holder(tmp_path / 'run')                                      # a writer that died: train takes over
    said = []
    train(make_config('smoke', data_dir='icbhi', out_dir=str(tmp_path / 'run'), **SMOKE), log=said.append)
    assert any('took over the lock' in m for m in said) and not (tmp_path / 'run' / LOCK).exists()
    ck = tmp_path / 'run' / 'best.pt'
    assert R.load_checkpoint(ck)['config']['data_dir'] == str(here / 'icbhi')
    monkeypatch.chdir(elsewhere)
    r = evaluate_run(ck)
    assert r['data'] == str(here / 'icbhi') and r['n'] > 0
    old = R.load_checkpoint(ck)                                          # a run recorded before: a relative path
    old['config']['data_dir'] = 'icbhi'
    torch.save(old, tmp_path / 'old.pt')
    with pytest.raises(ValueError, match=r"old.pt: the run recorded its data folder as 'icbhi', relative to a folder "
                                         r"it did not record; pass --data DIR"):
        evaluate_run(tmp_path / 'old.pt')
    assert evaluate_run(tmp_path / 'old.pt', data_dir=str(here / 'icbhi'))['n'] == r['n']
