"""Experiment tracking with MLflow (nbs/23_tracking): a tracked sweep on two local workers holds one MLflow run per grid
point whose params and per-epoch metrics equal the sweep's summary and run folders; a read-only store is one warning
line and the sweep's results are intact; the tracker itself (resume into the same MLflow run, rank 0 only, an
unreachable server) without training; `--track` checked in one line; `import patchmix_nb` does not import mlflow."""
import json, os, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from patchmix_nb.config import Config, make_config
from patchmix_nb.runs import RunFolder
from patchmix_nb.tracking import MlflowTracker, epoch_metrics, metric_history, search_runs, store_uri

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(preset='cpu-demo', max_steps=1, synthetic_recordings=24, interval=2, workers=2, log=None)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A tiny synthetic set, this clone importable by the workers, no MLFLOW_TRACKING_URI from outside."
    from patchmix_nb.synthetic import make_synthetic
    d = tmp_path_factory.mktemp('tracking')
    make_synthetic(d / 'syn', recordings=24, seed=3)
    mp = pytest.MonkeyPatch()
    mp.setenv('PYTHONPATH', os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    mp.setenv('HF_HUB_OFFLINE', '1')
    mp.delenv('MLFLOW_TRACKING_URI', raising=False)
    yield d
    mp.undo()


@pytest.fixture(scope='module')
def tracked_sweep(env):
    "method x 1 seed = 2 runs of 2 epochs on two local workers, tracked into OUT/mlflow.db."
    from patchmix_nb.sweep import sweep
    said = []
    runs = sweep(env / 'sw', grid={'method': ['ce', 'patchmix_cl']}, seeds=[0], data_dir=str(env / 'syn'), epochs=2,
                 track='mlflow', **{**TINY, 'log': said.append})
    return env / 'sw', runs, said


def test_tracked_sweep_store_equals_summary(tracked_sweep):
    out, runs, said = tracked_sweep
    summary = pd.read_csv(out / 'summary.csv').set_index('name')
    assert (out / 'mlflow.db').exists() and not [s for s in said if 'warning' in s], said
    assert f"tracking: MLflow experiment 'sw' in sqlite:///{out / 'mlflow.db'}" in said
    store = search_runs(f"sqlite:///{out / 'mlflow.db'}", 'sw').set_index('tags.mlflow.runName')
    assert sorted(store.index) == sorted(summary.index) == ['ce_seed0', 'patchmix_cl_seed0']   # one per grid point
    for name, row in summary.iterrows():
        r, folder = store.loc[name], RunFolder(out / name)
        assert row.status == 'ok' and r.status == 'FINISHED'
        cfg, m = folder.read('config.json'), folder.read('metrics.json')
        assert {k[7:]: v for k, v in r.items() if k.startswith('params.')} == {k: str(v) for k, v in cfg.items()}
        assert (r['params.method'], int(r['params.seed'])) == (row.method, row.seed)
        assert r['tags.config_hash'] == row.hash
        assert json.loads(r['tags.grid_point']) == {'method': row.method, 'seed': 0}
        for k, mine in (('sp', 'result_sp'), ('se', 'result_se'), ('score', 'result_score'),
                        ('epoch', 'selected_epoch')):
            assert r[f'metrics.{mine}'] == pytest.approx(row[k], rel=1e-12, abs=0), (name, k)
        assert r['metrics.result_score'] == m['test']['score']                               # exactly
        keys = sorted({k for h in m['history'] for k in epoch_metrics(h)})       # test_*: at the end (cpu-demo)
        hist = metric_history(f"sqlite:///{out / 'mlflow.db'}", r.run_id, keys)
        assert hist.index.tolist() == [1, 2]                                                 # step = epoch
        stored = {e: {k: v for k, v in d.items() if not pd.isna(v)} for e, d in hist.to_dict('index').items()}
        assert stored == {h['epoch']: epoch_metrics(h) for h in m['history']}                # exactly
        arts = {a.path for a in _client(out).list_artifacts(r.run_id)}
        assert {'metrics.json', 'config.json', 'experiment.ipynb', 'figures'} <= arts, arts


def _client(out):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{out / 'mlflow.db'}")


def test_readonly_store_is_one_warning_and_the_sweep_goes_on(env, monkeypatch):
    from patchmix_nb.sweep import sweep
    from patchmix_nb.tracking import prepare_store
    assert prepare_store(Config(out_dir=str(env / 'store' / 'x'), track='mlflow'))          # a real, empty store
    ro = f"sqlite:///file:{env / 'store' / 'mlflow.db'}?mode=ro&uri=true"                 # that refuses writes
    monkeypatch.setenv('MLFLOW_TRACKING_URI', ro)
    said = []
    runs = sweep(env / 'ro', grid={'method': ['ce']}, seeds=[0], data_dir=str(env / 'syn'), epochs=1, track='mlflow',
                 **{**TINY, 'log': said.append})
    assert runs.status.tolist() == ['ok'] and runs.score.notna().all()                  # the results are intact
    warn = [s for s in said if 'warning' in s]
    assert len(warn) == 1 and warn[0].startswith('warning: MLflow tracking is off') and ro in warn[0], said
    nb = (env / 'ro' / 'ce_seed0' / 'experiment.ipynb').read_text()
    assert nb.count('warning: MLflow tracking is off') == 1                              # the worker: one line too
    assert search_runs(f"sqlite:///{env / 'store' / 'mlflow.db'}", 'store').empty


def _fake_run(folder: Path, cfg: Config, history: list, rank: int = 0):
    "What the tracker reads of a TrainingRun: cfg, folder, history, rank, world, the model's device."
    model = SimpleNamespace(device=torch.device('cpu'), amp_dtype=None)
    return SimpleNamespace(cfg=cfg, folder=RunFolder(folder), history=history, rank=rank, world=1,
                           learner=SimpleNamespace(model=model))


def _epoch(e: int) -> dict:
    return {'epoch': e, 'lr': 1e-3 / e, 'loss': 3. - e, 'seconds': 1.5, 'val': {'sp': 50. + e, 'se': 10. * e,
            'score': 30. + e}, 'test': {'sp': 60., 'se': 5. * e, 'score': 40. + e}}


def test_resume_continues_the_same_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    cfg = Config(out_dir=str(tmp_path / 'runs' / 'r'), epochs=3, track='mlflow')
    (tmp_path / 'runs' / 'r').mkdir(parents=True)
    said, h = [], [_epoch(1), _epoch(2)]
    t = MlflowTracker(cfg, said.append)
    run = _fake_run(cfg.out_dir, cfg, h[:1])
    t('start', run)
    t('epoch', run)                                                  # epoch 1, then the process is killed
    run = _fake_run(cfg.out_dir, cfg, h)                             # resumed with epoch 1 done; epoch 2 trained
    t2 = MlflowTracker(cfg, said.append)
    t2('start', run)
    t2('epoch', run)
    t2('end', run)
    assert said == [] and t2.run_id == t.run_id
    uri = store_uri(cfg)
    store = search_runs(uri, 'runs')
    assert len(store) == 1 and store.status[0] == 'RUNNING'         # 2 of 3 epochs: not finished
    hist = metric_history(uri, t.run_id, ('val_score', 'lr'))
    assert hist.to_dict('list') == {'val_score': [31., 32.], 'lr': [1e-3, 5e-4]}          # no epoch twice
    assert json.loads((Path(cfg.out_dir) / 'tracking.json').read_text())['epoch'] == 2


def test_unreachable_store_is_one_line_and_rank_0_only(tmp_path, monkeypatch):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', 'http://127.0.0.1:9')                    # nothing listens there
    cfg = Config(out_dir=str(tmp_path / 'r'), epochs=1, track='mlflow')
    (tmp_path / 'r').mkdir()
    said = []
    t = MlflowTracker(cfg, said.append)
    run = _fake_run(cfg.out_dir, cfg, [_epoch(1)])
    for event in ('start', 'epoch', 'end'): t(event, run)
    assert len(said) == 1 and said[0].startswith('warning: MLflow tracking is off for this run (http://127.0.0.1:9')
    assert '\n' not in said[0] and not (tmp_path / 'r' / 'tracking.json').exists()
    other = MlflowTracker(cfg, said.append)
    for event in ('start', 'epoch', 'end'): other(event, _fake_run(cfg.out_dir, cfg, [_epoch(1)], rank=1))
    assert len(said) == 1 and other.client is None                  # rank 1 never touches the store


def test_track_is_a_checked_config_field(capsys):
    assert make_config(track='mlflow').track == 'mlflow' and make_config().track is None
    with pytest.raises(ValueError, match=r"^track must be one of None, mlflow; got 'wandb'$"):
        make_config(track='wandb')
    from patchmix_nb.config import config_hash
    assert config_hash(make_config(track='mlflow', experiment='x')) == config_hash(make_config())   # same run
    from patchmix_nb.cli import build_parser, config_from_args, main
    assert config_from_args(build_parser().parse_args(['train', '--track', 'mlflow'])).track == 'mlflow'
    assert main(['train', '--track', 'wandb', '--epochs', '1']) == 2
    err = capsys.readouterr().err.strip()
    assert err == "patchmix train: error: track must be one of None, mlflow; got 'wandb'", err


def test_import_does_not_load_mlflow():
    code = "import sys, patchmix_nb.cli, patchmix_nb.sweep, patchmix_nb.tracking; print('mlflow' in sys.modules)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.stdout.strip() == 'False', r.stderr
