"""Preemption-safe runs (issue 18, item 1): a run stopped mid-epoch by a signal (a local SIGTERM/SIGINT, Slurm's
warning before a time limit) saves partial.pt at that step and, resumed, ends with the same metrics.json values as
an uninterrupted run; a local worker's run stops on SIGTERM (a Slurm job signalled mid-epoch: tests/test_slurm.py)."""
import json, os, signal, time
from pathlib import Path

import pytest
import torch

from patchmix_nb import train as T
from patchmix_nb.config import make_config
from patchmix_nb.runs import PARTIAL, STOPPED, RunFolder, load_checkpoint
from patchmix_nb.train import RunInterrupted, train

TINY = dict(synthetic_recordings=48, duration=2.0, epochs=2, max_steps=3, batch_size=8, specaug='clean', progress=False)


CLOCK_AND_FOLDER = ('seconds', 'eval_seconds', 'out_dir')


def _values(path: Path) -> dict:
    "metrics.json without what differs between two runs of the same config: the folder and the clock."
    def strip(o):
        if isinstance(o, dict): return {k: strip(v) for k, v in o.items() if k not in CLOCK_AND_FOLDER}
        return [strip(v) for v in o] if isinstance(o, list) else o
    return strip(json.loads(Path(path).read_text()))


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "One torch thread, as a Slurm job with one core has: the same sums, the same bits."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "An uninterrupted run: two epochs of three steps."
    out = tmp_path_factory.mktemp('ref') / 'run'
    train(make_config('cpu-demo', out_dir=str(out), **TINY), log=None)
    return out


def _interrupt_after(monkeypatch, step: int, act):
    "Do `act()` after the `step`-th training step of the run (counted over epochs), as a signal would arrive."
    real, n = T.Learner.step, []
    def step_then(self, x, y):
        out = real(self, x, y)
        n.append(1)
        if len(n) == step: act()
        return out
    monkeypatch.setattr(T.Learner, 'step', step_then)


def test_sigterm_mid_epoch_resumes_to_the_same_result(tmp_path, monkeypatch, reference):
    out = tmp_path / 'run'
    cfg = make_config('cpu-demo', out_dir=str(out), **TINY)
    _interrupt_after(monkeypatch, 3 + 1, lambda: os.kill(os.getpid(), signal.SIGTERM))    # epoch 2, step 1
    with pytest.raises(RunInterrupted, match=r"interrupted \(SIGTERM\) at epoch 2, step 1: saved .*partial.pt"):
        train(cfg, log=None)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL                 # the handler is gone with the run
    part = load_checkpoint(out / PARTIAL)
    assert (part['epoch'], part['step'], len(part['steps']['loss'])) == (2, 1, 1)
    assert json.loads((out / STOPPED).read_text())['saved'] == PARTIAL
    logs = []
    train(cfg, resume=True, log=logs.append)
    assert any(line.endswith(f"{PARTIAL} at epoch 2, step 1") for line in logs), logs
    assert not (out / PARTIAL).exists()                                        # the epoch committed: out of date
    assert _values(out / 'metrics.json') == _values(reference / 'metrics.json')


def test_stop_request_in_the_first_epoch(tmp_path, monkeypatch, reference):
    "A sweep worker's stop request (no signal reaches the run) in epoch 1: no last.pt yet, partial.pt alone resumes."
    out = tmp_path / 'run'
    cfg = make_config('cpu-demo', out_dir=str(out), **TINY)
    _interrupt_after(monkeypatch, 2, RunFolder(out).request_stop)
    with pytest.raises(RunInterrupted, match=r"\(stop request\) at epoch 1, step 2"):
        train(cfg, log=None)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [STOPPED, 'config.json', PARTIAL]    # the request answered
    assert RunFolder(out).state() == 'interrupted'
    with pytest.raises(FileExistsError, match='already holds a run'):
        train(cfg, log=None)
    train(cfg, resume=True, log=None)
    assert _values(out / 'metrics.json') == _values(reference / 'metrics.json')


SWEEP_TINY = ['--preset', 'cpu-demo', '--epochs', 2, '--max-steps', 3, '--batch-size', 8, '--duration', 2,
              '--specaug', 'clean', '--set', 'synthetic_recordings=48']


def _wait(what: str, cond, timeout: float):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (v := cond()): return v
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _training(run: Path) -> bool:
    "Is the experiment notebook executing its training cell (papermill marks the running cell in its copy)?"
    try: nb = json.loads((run / '.experiment-running.ipynb').read_text())
    except (OSError, ValueError): return False
    return any('train(cfg' in ''.join(c['source']) and c['metadata'].get('papermill', {}).get('status') == 'running'
               for c in nb['cells'])


STANDIN = '''import time
from pathlib import Path
from patchmix_nb.core import save_json
from patchmix_nb.runs import STOPPED, RunFolder
from patchmix_nb.train import RunInterrupted
run = RunFolder(Path(config).parent)
while not run.stop_requested(): time.sleep(0.05)     # training, as far as the worker can tell
run.clear_stop()
save_json({'epoch': 1, 'step': 1, 'saved': 'partial.pt'}, run.path / STOPPED)
raise RunInterrupted('interrupted (stop request) at epoch 1, step 1')'''


def test_a_local_worker_stops_its_run_on_sigterm(tmp_path):
    "SIGTERM to a local worker: it asks the run to stop and save where it is, then ends as interrupted (not failed)."
    import threading
    import nbformat
    from patchmix_nb.config import Config
    from patchmix_nb.core import save_json
    from patchmix_nb.launch import execute_run
    nb = tmp_path / 'standin.ipynb'
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('config = None\nresume = False', metadata={'tags': ['parameters']}),
        nbformat.v4.new_code_cell(STANDIN)],
        metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}), nb)
    d = tmp_path / 'run'
    RunFolder(d).write_config(Config(out_dir=str(d)))
    save_json({'name': 'run', 'point': {}, 'notebook': str(nb)}, d / 'sweep.json')
    def kill_when_running():
        _wait('the worker', lambda: (d / '.running.json').exists(), 60)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=kill_when_running, daemon=True).start()
    ex = execute_run(d)
    assert ex == json.loads((d / 'execution.json').read_text())
    assert ex['status'] == 'interrupted' and 'at epoch 1, step 1' in ex['error'], ex
    assert json.loads((d / STOPPED).read_text())['step'] == 1                 # the run answered before the worker ended
    assert not (d / 'experiment-failed.ipynb').exists() and RunFolder(d).state() == 'interrupted'
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
