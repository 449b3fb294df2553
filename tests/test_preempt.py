"""Preemption-safe runs (issue 18, item 1): a run stopped mid-epoch by a signal (a local SIGTERM/SIGINT, Slurm's
warning before a time limit) saves partial.pt at that step and, resumed, ends with the same metrics.json values as
an uninterrupted run; a Slurm job signalled mid-epoch is requeued, shows as `requeued` while it waits, and resumes."""
import json, os, signal
from pathlib import Path

import pytest

from patchmix_nb import train as T
from patchmix_nb.config import make_config
from patchmix_nb.runs import PARTIAL, STOPPED, RunFolder, load_checkpoint
from patchmix_nb.train import RunInterrupted, train

TINY = dict(synthetic_recordings=48, duration=2.0, epochs=2, max_steps=4, batch_size=8, progress=False)


def _values(path: Path) -> dict:
    "metrics.json without what differs between two runs of the same config: the folder and the clock."
    def strip(o):
        if isinstance(o, dict): return {k: strip(v) for k, v in o.items() if k not in ('seconds', 'eval_seconds', 'out_dir')}
        return [strip(v) for v in o] if isinstance(o, list) else o
    return strip(json.loads(Path(path).read_text()))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "An uninterrupted run: two epochs of four steps."
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
    _interrupt_after(monkeypatch, 4 + 2, lambda: os.kill(os.getpid(), signal.SIGTERM))    # epoch 2, step 2
    with pytest.raises(RunInterrupted, match=r"interrupted \(SIGTERM\) at epoch 2, step 2: saved .*partial.pt"):
        train(cfg, log=None)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL                 # the handler is gone with the run
    part = load_checkpoint(out / PARTIAL)
    assert (part['epoch'], part['step'], len(part['steps']['loss'])) == (2, 2, 2)
    assert json.loads((out / STOPPED).read_text())['saved'] == PARTIAL
    logs = []
    train(cfg, resume=True, log=logs.append)
    assert any(line.endswith(f"{PARTIAL} at epoch 2, step 2") for line in logs), logs
    assert not (out / PARTIAL).exists()                                        # the epoch committed: out of date
    assert _values(out / 'metrics.json') == _values(reference / 'metrics.json')


def test_stop_request_in_the_first_epoch(tmp_path, monkeypatch, reference):
    "A sweep worker's stop request (no signal reaches the run) in epoch 1: no last.pt yet, partial.pt alone resumes."
    out = tmp_path / 'run'
    cfg = make_config('cpu-demo', out_dir=str(out), **TINY)
    _interrupt_after(monkeypatch, 3, RunFolder(out).request_stop)
    with pytest.raises(RunInterrupted, match=r"\(stop request\) at epoch 1, step 3"):
        train(cfg, log=None)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [STOPPED, 'config.json', PARTIAL]    # the request answered
    assert RunFolder(out).state() == 'interrupted'
    with pytest.raises(FileExistsError, match='already holds a run'):
        train(cfg, log=None)
    train(cfg, resume=True, log=None)
    assert _values(out / 'metrics.json') == _values(reference / 'metrics.json')
