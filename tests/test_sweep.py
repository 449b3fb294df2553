"""`patchmix sweep` end to end on tiny synthetic data: a grid on two local workers, the same grid as Slurm jobs on a
single-node test cluster (tests/slurm_cluster.py), the experiment notebook's dry run, and one test per sweep defect
of issue 9 (reuse with other settings, a summary of only the new rows, a relative --data, exit 0 with failures)."""
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PATCHMIX = Path(sys.executable).parent / 'patchmix'
# one epoch of two steps on 2 s clips of a 24-recording set (the smoke preset's size)
TINY = ['--preset', 'cpu-demo', '--epochs', '1', '--max-steps', '2', '--set', 'synthetic_recordings=24', '--interval', '2']
GRID = ['--grid', 'method=ce,patchmix_cl', 'seed=0,1']


def patchmix(*args, cwd=None, check=True, timeout=900):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    r = subprocess.run([str(PATCHMIX), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"patchmix {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture
def cli(capsys, monkeypatch):
    "`patchmix ARGS` in this process (no interpreter start), from folder `cwd`: (exit status, stdout, stderr)."
    from patchmix_nb.cli import main
    def run(*args, cwd=None):
        if cwd: monkeypatch.chdir(cwd)
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A folder holding a tiny synthetic set `syn` (sweeps below run from here with the relative `--data syn`)."
    d = tmp_path_factory.mktemp('sweep')
    patchmix('synth', d / 'syn', '--recordings', 24, '--seed', 3)
    return d


@pytest.fixture(scope='module')
def local_sweep(work):
    "method × seed = 4 runs on two local workers, with a relative --data."
    r = patchmix('sweep', *GRID, '--workers', 2, '--data', 'syn', *TINY, '--out', 'local', cwd=work)
    return work / 'local', r


def _scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / 'summary.csv').set_index('name')[['status', 'sp', 'se', 'score']].sort_index()


def test_local_grid_runs_two_at_a_time(local_sweep):
    out, r = local_sweep
    runs = pd.read_csv(out / 'summary.csv')
    assert sorted(runs.name) == ['ce_seed0', 'ce_seed1', 'patchmix_cl_seed0', 'patchmix_cl_seed1']
    assert (runs.status == 'ok').all() and runs.score.notna().all()
    assert all((out / n / 'experiment.ipynb').exists() and (out / n / 'figures' / 'confusion.png').exists() for n in runs.name)
    ex = [json.loads((out / n / 'execution.json').read_text()) for n in runs.name]
    cores = len(os.sched_getaffinity(0))
    assert {e['threads'] for e in ex} == {max(1, cores // 2)}          # the cores shared out between 2 workers
    events = sorted([(e['started'], 1) for e in ex] + [(e['finished'], -1) for e in ex])
    level = [sum(d for _, d in events[:i + 1]) for i in range(len(events))]
    assert max(level) == 2                                              # two runs at a time, never more
    assert '4/4 done, 0 running, 0 failed, 0 queued' in r.stdout
    md = (out / 'summary.md').read_text()
    assert '| ce | 2 | 0 |' in md and '| patchmix_cl | 2 | 0 |' in md and '±' in md


def test_relative_data_is_resolved(local_sweep, work):
    # defect: a relative --data reached the notebook, which runs from nbs/experiments: every run failed
    out, _ = local_sweep
    rec = json.loads((out / 'ce_seed0' / 'sweep.json').read_text())
    assert rec['params']['data_dir'] == str((work / 'syn').resolve())
    assert json.loads((out / 'ce_seed0' / 'metrics.json').read_text())['config']['data_dir'] == str((work / 'syn').resolve())


def test_other_settings_are_refused_not_reused(local_sweep, work, cli):
    # defect: a second call with another --model said "reusing the finished run" for runs made with other settings
    out, _ = local_sweep
    before = (out / 'ce_seed0' / 'metrics.json').stat().st_mtime_ns
    rc, _, err = cli('sweep', '--grid', 'method=ce', 'seed=0', '--model', 'ast-small', '--data', 'syn', *TINY, '--out', 'local', cwd=work)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert "ce_seed0 (model: 'ast-tiny' -> 'ast-small')" in err and '--rerun' in err
    assert (out / 'ce_seed0' / 'metrics.json').stat().st_mtime_ns == before


def test_summary_holds_every_run_of_the_folder(local_sweep, work, cli):
    # defect: a second call rewrote summary.csv with only its own rows
    out, _ = local_sweep
    before = _scores(out)
    rc, stdout, _ = cli('sweep', '--grid', 'method=ce', 'seed=0', '--data', 'syn', *TINY, '--out', 'local', cwd=work)
    assert rc == 0 and 'ce_seed0: ok, same config: kept' in stdout
    pd.testing.assert_frame_equal(_scores(out), before)
    assert len(before) == 4
    rc, stdout, _ = cli('sweep', '--status', out)
    assert rc == 0 and '4/4 done, 0 running, 0 failed, 0 queued' in stdout


def test_failed_run_exits_nonzero_after_the_others(work):
    # defect: the sweep exited 0 with runs failed. batch_size 4096 > the training cycles: that run fails in train()
    r = patchmix('sweep', '--grid', 'batch_size=4096,8', '--methods', 'ce', '--seeds', 0, '--data', 'syn', *TINY,
                 '--workers', 2, '--out', 'failing', cwd=work, check=False)
    runs = pd.read_csv(work / 'failing' / 'summary.csv').set_index('name')
    assert r.returncode == 1 and 'ce_batch_size4096_seed0 (failed)' in r.stderr
    assert runs.status.to_dict() == {'ce_batch_size4096_seed0': 'failed', 'ce_batch_size8_seed0': 'ok'}
    assert 'fewer than one batch' in runs.error['ce_batch_size4096_seed0']
    assert (work / 'failing' / 'ce_batch_size4096_seed0' / 'experiment-failed.ipynb').exists()


def test_unknown_grid_field_names_the_valid_ones(work, cli):
    rc, _, err = cli('sweep', '--grid', 'temprature=0.1', '--out', 'x', cwd=work)
    assert rc == 2 and "unknown Config field 'temprature'" in err and 'temperature' in err
    assert not (work / 'x').exists()


def test_list_specs_and_spec_dry_run(work, tmp_path, cli):
    rc, out, _ = cli('sweep', '--list-specs')
    for name in ('paper-main', 'ablation-temperature', 'ablation-alpha', 'ablation-target', 'ablation-negatives',
                 'ablation-mixing', 'folds'):
        assert name in out
    fake = tmp_path / 'FAKE.pth'; fake.write_bytes(b'')
    rc, out, _ = cli('sweep', '--spec', 'folds', '--pretrained', fake, '--out', 'folds', '--dry-run', cwd=work)
    names = [n for n in out.split() if n.endswith('_seed1')]
    assert rc == 0 and names == [f"{m}_fold{k}_seed1" for m in ('ce', 'patchmix_cl') for k in range(5)]
    spec = tmp_path / 'mine.yaml'
    spec.write_text('preset: cpu-demo\ngrid: {method: [patchmix_cl], temperature: [0.06, 0.1], seed: [1, 2]}\n')
    rc, out, _ = cli('sweep', '--spec', spec, '--out', 'mine', '--dry-run', cwd=work)
    assert 'patchmix_cl_temperature0.1_seed2' in out and not (work / 'mine' / 'patchmix_cl_temperature0.1_seed2').exists()
    spec.write_text('grid: {method: [ce]\n')
    rc, _, err = cli('sweep', '--spec', spec, '--out', 'mine', cwd=work)
    assert rc == 2 and f"{spec}:" in err and 'YAML' in err


def test_experiment_dry_run_records_the_paper_preset(tmp_path):
    # the notebook's parameters default to None (= the preset's value): -p preset paper gets every paper value
    import papermill as pm
    fake = tmp_path / 'FAKE.pth'; fake.write_bytes(b'')
    run = tmp_path / 'run'
    nb = ROOT / 'nbs' / 'experiments' / 'experiment.ipynb'
    pm.execute_notebook(str(nb), str(tmp_path / 'out.ipynb'), kernel_name='python3', cwd=str(nb.parent), progress_bar=False,
                        parameters=dict(preset='paper', pretrained=str(fake), dry_run=True, out_dir=str(run)))
    cfg = json.loads((run / 'config.json').read_text())
    assert (cfg['duration'], cfg['epochs'], cfg['model'], cfg['batch_size'], cfg['preset']) == (8.0, 50, 'ast-base', 8, 'paper')
    assert not (run / 'last.pt').exists() and not (run / 'metrics.json').exists()


def test_slurm_grid_gives_the_same_runs(slurm_cluster, local_sweep, work, cli):
    out, _ = local_sweep
    r = patchmix('sweep', *GRID, '--executor', 'slurm', '--slurm-cpus-per-run', 1, '--slurm-time', 10, '--data', 'syn',
                 *TINY, '--out', 'slurm', cwd=work)
    sl = work / 'slurm'
    assert sorted(p.parent.name for p in sl.glob('*/experiment.ipynb')) == sorted(p.parent.name for p in out.glob('*/experiment.ipynb'))
    pd.testing.assert_frame_equal(_scores(sl), _scores(out))               # same runs, same figures
    ex = [json.loads(p.read_text()) for p in sl.glob('*/execution.json')]
    assert len(ex) == 4 and all(e['job_id'] for e in ex) and {e['threads'] for e in ex} == {1}
    assert '4/4 done' in r.stdout
    rc, stdout, _ = cli('sweep', '--status', sl)
    assert rc == 0 and '4/4 done, 0 running, 0 failed, 0 queued' in stdout
