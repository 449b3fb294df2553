"""`patchmix sweep` end to end on tiny synthetic data: a grid on two local workers (the same grid as Slurm jobs:
tests/test_slurm.py), the experiment notebook's parameters and dry run, one test per
sweep defect of issue 9 (reuse with other settings, a summary of only the new rows, a relative --data, exit 0 with
failures), and the one Config of a run (written once and read; the same settings give the same run from train, sweep,
the notebook and Python; a preset only where named). The local grid also scores each run on a synthetic SPRSound after
training (the `transfer` specs' mechanism); the comparison specs (backbones, transfer and their CPU variants) are
checked as plans (points and fields), without running them."""
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


@pytest.fixture(scope='session')
def work(once):
    """A folder holding a tiny synthetic set `syn` (sweeps below run from here with the relative `--data syn`), and a
    synthetic SPRSound `spr` to score runs on."""
    def make(d):
        from patchmix_nb.sprsound import make_synthetic_sprsound
        patchmix('synth', d / 'syn', '--recordings', 24, '--seed', 3)
        make_synthetic_sprsound(d / 'spr', recordings=24, seed=3)
    return once('sweep', make)


@pytest.fixture(scope='session')
def local_sweep(work, once):
    """method × seed = 4 runs on two local workers, with a relative --data, each scored on `spr` after training:
    (the sweep's folder, its stdout). Made once for this module's tests and the Slurm test, wherever pytest-xdist
    runs them."""
    def make(d):
        r = patchmix('sweep', *GRID, '--workers', 2, '--data', 'syn', *TINY, '--out', 'local', '--eval-on', 'sprsound',
                     '--eval-data', 'spr', '--record', 'local-record', cwd=work)
        (d / 'stdout.txt').write_text(r.stdout)
    return work / 'local', (once('local-sweep', make) / 'stdout.txt').read_text()


def _scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / 'summary.csv').set_index('name')[['status', 'sp', 'se', 'score']].sort_index()


def test_local_grid_runs_two_at_a_time(local_sweep):
    out, stdout = local_sweep
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
    assert '4/4 done, 0 running, 0 failed, 0 queued' in stdout
    md = (out / 'summary.md').read_text()
    assert '| ce | 2 | 0 |' in md and '| patchmix_cl | 2 | 0 |' in md and '±' in md


def test_relative_data_is_resolved(local_sweep, work):
    # defect: a relative --data reached the notebook, which runs elsewhere: every run failed
    out, _ = local_sweep
    assert json.loads((out / 'ce_seed0' / 'config.json').read_text())['data_dir'] == str((work / 'syn').resolve())
    assert json.loads((out / 'ce_seed0' / 'metrics.json').read_text())['config']['data_dir'] == str((work / 'syn').resolve())


def test_run_config_is_written_once_and_read(local_sweep):
    # the sweep resolves each run's Config once (config.json); the worker hands the notebook only that file's path
    from patchmix_nb.config import Config, config_hash
    from patchmix_nb.launch import experiment_notebook
    out, _ = local_sweep
    for run in ('ce_seed0', 'patchmix_cl_seed1'):
        d = out / run
        cfg = Config.load(d / 'config.json')
        rec = json.loads((d / 'sweep.json').read_text())
        assert set(rec) == {'name', 'point', 'notebook', 'hash', 'evaluate'} and rec['hash'] == config_hash(cfg)
        assert json.loads((d / 'metrics.json').read_text())['config'] == cfg.to_dict()       # trained as written
        assert cfg.out_dir == str(d.resolve()) and cfg.progress is False and cfg.preset == 'cpu-demo'
        assert json.loads((d / 'execution.json').read_text())['notebook'] == str(experiment_notebook())
        nb = json.loads((d / 'experiment.ipynb').read_text())
        injected = next(c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', []))
        assert f'config = "{d.resolve() / "config.json"}"' in ''.join(injected['source'])     # the path, no field
        assert 'batch_size' not in ''.join(injected['source']) and 'eval_on = "sprsound"' in ''.join(injected['source'])


def test_runs_scored_on_a_second_dataset(local_sweep, work):
    # --eval-on sprsound --eval-data spr (relative): each run's best.pt scored on SPRSound's two test sets after
    # training, in eval-sprsound.json, and the summary reads it
    out, _ = local_sweep
    runs = pd.read_csv(out / 'summary.csv').set_index('name')
    assert len(runs) == 4 and (runs.transfer == 'sprsound').all()
    for n in runs.index:
        ev = json.loads((out / n / 'eval-sprsound.json').read_text())
        assert ev['dataset'] == 'sprsound' and ev['data'] == str((work / 'spr').resolve())
        assert {g['group'] for g in ev['groups']} == {'intra-test', 'inter-test', 'all'}
        assert ev['classes'] == ['normal', 'crackle', 'wheeze', 'both'] and sum(map(sum, ev['confusion'])) == ev['n']
        assert runs.loc[n, 'transfer_score'] == pytest.approx(ev['score'])
        spr = next(g['spr_score'] for g in ev['groups'] if g['group'] == 'all')
        assert runs.loc[n, 'transfer_spr_score'] == pytest.approx(spr)
    md = (out / 'summary.md').read_text()
    assert "| Score on sprsound | sprsound's own Score |" in md and '## Published figures' in md


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


def test_comparison_specs_plan(work, tmp_path, cli):
    # backbones, transfer and their CPU variants: the points and fields each run gets, planned (nothing runs)
    from patchmix_nb.sweep import plan_sweep, sweep_points
    ck = {'ast-base': tmp_path / 'audioset_10_10_0.4593.pth', 'beats': tmp_path / 'BEATs_iter3_plus_AS2M.pt'}
    for f in ck.values(): f.write_bytes(b'')
    want = {'backbones': (60, 'paper', {'ast-base', 'beats'}, {'official', 'official-disjoint'}, {1, 2, 3, 4, 5}),
            'backbones-cpu': (24, 'smoke', {'ast-tiny', 'beats-tiny'}, {'official', 'official-disjoint'}, {1, 2}),
            'transfer': (30, 'paper', {'ast-base', 'beats'}, {'official'}, {1, 2, 3, 4, 5}),
            'transfer-cpu': (8, 'smoke', {'ast-tiny', 'beats-tiny'}, {'official'}, {1, 2})}
    for name, (n, preset, models, folds, seeds) in want.items():
        points, spec = sweep_points(spec=name)
        paper = preset == 'paper'
        ev = spec.get('evaluate')
        ev = {**ev, 'data_dir': str(work / 'spr')} if ev and paper else ev       # real data: a real folder to score on
        runs = plan_sweep(tmp_path / name, points, spec['preset'], ck if paper else None, ev,
                          **({'data_dir': str(work / 'syn')} if paper else {}))
        cfgs = [r.config for r in runs]
        assert len(runs) == n == len({r.name for r in runs}) and {c.preset for c in cfgs} == {preset}, name
        assert {c.model for c in cfgs} == models and {c.test_fold for c in cfgs} == folds, name
        assert {c.seed for c in cfgs} == seeds and {c.n_cls for c in cfgs} == {4}, name
        methods = {c.method for c in cfgs}
        assert methods == ({'ce', 'patchmix_cl'} if name == 'transfer-cpu' else {'ce', 'patchmix_ce', 'patchmix_cl'})
        if paper:      # the checkpoint of each run's model, the paper's optimisation
            assert all(Path(c.pretrained) == ck[c.model].resolve() for c in cfgs), name
            assert {(c.epochs, c.batch_size, c.lr, c.duration) for c in cfgs} == {(50, 8, 5e-5, 8.0)}
        else:          # from scratch, CPU-cheap: one epoch of 3 steps on 2 s clips
            assert {(c.pretrained, c.epochs, c.max_steps, c.duration) for c in cfgs} == {(None, 1, 3, 2.0)}
        ev = [r.record().get('evaluate') for r in runs]
        assert ev == [None] * n if name.startswith('backbones') else all(e['dataset'] == 'sprsound' for e in ev)
    # the CLI: a checkpoint per model; a real ICBHI run needs a real SPRSound folder to be scored on
    rc, out, _ = cli('sweep', '--spec', 'backbones', '--data', 'syn', '--pretrained-for', f"ast-base={ck['ast-base']}",
                     f"beats={ck['beats']}", '--out', 'bk', '--dry-run', cwd=work)
    assert rc == 0 and out.count(': would run') == 60 and 'ce_modelbeats_foldofficial-disjoint_seed5' in out
    rc, _, err = cli('sweep', '--spec', 'transfer', '--data', 'syn', '--pretrained-for', f"ast-base={ck['ast-base']}",
                     f"beats={ck['beats']}", '--out', 'tr', '--dry-run', cwd=work)
    assert rc == 2 and 'is scored on sprsound after training: give its folder' in err
    rc, _, err = cli('sweep', '--spec', 'transfer-cpu', '--eval-data', 'nowhere', '--out', 'tr', '--dry-run', cwd=work)
    assert rc == 2 and 'nowhere: no such folder' in err
    rc, _, err = cli('sweep', '--spec', 'backbones-cpu', '--pretrained-for', 'ast-tiny', '--out', 'x', cwd=work)
    assert rc == 2 and '--pretrained-for expects MODEL=PATH' in err


NOTEBOOK = ROOT / 'nbs' / 'experiments' / 'experiment.ipynb'


def notebook(tmp_path, **parameters):
    "Execute the experiment notebook (from nbs/experiments, as papermill's --cwd) with `parameters`."
    import papermill as pm
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / 'out.ipynb'), kernel_name='python3', cwd=str(NOTEBOOK.parent),
                        progress_bar=False, parameters=parameters)


def test_experiment_dry_run_records_the_paper_preset(tmp_path):
    # a field left out takes the preset's value: -p preset paper gets every paper value
    fake = tmp_path / 'FAKE.pth'
    fake.write_bytes(b'')
    run = tmp_path / 'run'
    notebook(tmp_path, preset='paper', pretrained=str(fake), dry_run=True, out_dir=str(run))
    cfg = json.loads((run / 'config.json').read_text())
    assert (cfg['duration'], cfg['epochs'], cfg['model'], cfg['batch_size'], cfg['preset']) == (8.0, 50, 'ast-base', 8, 'paper')
    assert not (run / 'last.pt').exists() and not (run / 'metrics.json').exists()


def test_same_settings_same_run_from_every_entry_point(tmp_path, cli):
    # Python, `patchmix train`'s flags, `patchmix sweep`'s plan and the experiment notebook: one Config, one hash
    from patchmix_nb.cli import build_parser, config_from_args
    from patchmix_nb.config import Config, config_hash, make_config
    from patchmix_nb.sweep import plan_sweep, sweep_points
    h = config_hash(make_config('smoke', method='ce', batch_size=4))
    assert config_hash(config_from_args(build_parser().parse_args(
        ['train', '--preset', 'smoke', '--method', 'ce', '--batch-size', '4']))) == h
    rc, out, _ = cli('sweep', '--preset', 'smoke', '--grid', 'method=ce', '--batch-size', '4', '--out', tmp_path / 's',
                     '--dry-run')
    assert rc == 0 and h in out and 'ce_seed1' in out and not (tmp_path / 's').exists()    # a dry run writes nothing
    run = plan_sweep(tmp_path / 's', sweep_points(['method=ce'])[0], 'smoke', batch_size=4)[0]
    run.write()
    assert run.hash == h and Config.load(run.dir / 'config.json') == run.config
    notebook(tmp_path, preset='smoke', method='ce', batch_size=4, dry_run=True, out_dir=str(tmp_path / 'nb'))
    assert config_hash(Config.load(tmp_path / 'nb' / 'config.json')) == h
    notebook(tmp_path, config=str(run.dir / 'config.json'), dry_run=True)     # read as written: the file unchanged
    assert Config.load(run.dir / 'config.json') == run.config


def test_sweep_and_train_default_to_no_preset(tmp_path, cli):
    # one rule: a preset applies only when named, from train, sweep, Python (the notebook's own default is smoke)
    from patchmix_nb.config import config_hash, make_config
    rc, out, _ = cli('sweep', '--grid', 'method=ce', '--out', tmp_path / 's', '--dry-run')
    assert rc == 0 and config_hash(make_config(method='ce')) in out
    assert config_hash(make_config('smoke', method='ce')) not in out


def test_sweep_takes_every_train_flag():
    import argparse
    from patchmix_nb.cli import build_parser
    from patchmix_nb.config import FIELDS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = {c: {s for a in sub[c]._actions for s in a.option_strings} for c in ('train', 'sweep')}
    assert flags['train'] - flags['sweep'] == {'--resume', '--overwrite'}      # train's own controls
    assert all(f"--{n.replace('_', '-')}" in flags['train'] for n in FIELDS)


def test_notebook_parameters_are_the_config_fields(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError) as e:
        notebook(tmp_path, batchsize=4, dry_run=True)
    assert "unknown Config field 'batchsize'; valid fields: data_dir" in str(e.value) and 'batch_size' in str(e.value)
    notebook(tmp_path, preset='smoke', lr=1e-4, test_fold=2, fused_passes=False, dry_run=True, out_dir=str(tmp_path / 'r'))
    cfg = json.loads((tmp_path / 'r' / 'config.json').read_text())
    assert (cfg['lr'], cfg['test_fold'], cfg['fused_passes'], cfg['epochs']) == (1e-4, '2', False, 1)   # typed as the fields
    with pytest.raises(pm.PapermillExecutionError) as e:
        notebook(tmp_path, config=str(tmp_path / 'r' / 'config.json'), lr=1e-3, dry_run=True)
    assert 'give no other field' in str(e.value) and "['lr']" in str(e.value)


def test_record_of_a_sweep(local_sweep, cli, tmp_path):
    # 25_summary: a sweep's record shows it without the checkpoints; each run's Score recomputed from its recorded
    # test predictions is the Score its training reported
    from patchmix_nb.metrics import icbhi_score
    from patchmix_nb.summary import RECORD_FILES, load_record, plot_record
    out, _ = local_sweep
    rc, stdout, _ = cli('sweep', '--status', out, '--record', tmp_path / 'rec')
    assert rc == 0 and f"record of {out}: {tmp_path / 'rec'}" in stdout
    assert sorted(p.name for p in (tmp_path / 'rec').iterdir()) == sorted(RECORD_FILES)   # no temp file left behind
    rec = load_record(tmp_path / 'rec')
    runs = rec['runs'].set_index('name')
    assert sorted(runs.index) == ['ce_seed0', 'ce_seed1', 'patchmix_cl_seed0', 'patchmix_cl_seed1']
    for name, g in rec['predictions'].groupby('name'):
        assert icbhi_score(g['label'], g['pred'])['score'] == pytest.approx(runs.score[name], abs=1e-6)
    assert set(rec['predictions'].name) == set(runs.index)
    assert rec['history'].groupby('name').epoch.max().eq(1).all()               # one epoch each
    assert sorted(rec['tsne'].method.unique()) == ['ce', 'patchmix_cl'] and set(rec['tsne'].seed) == {0}
    assert rec['meta']['command'] == f"patchmix sweep --status {out} --record {tmp_path / 'rec'}"
    assert rec['meta']['groups'] == ['method'] and rec['meta']['runs'] == 4
    fig = plot_record(rec)
    assert len([a for a in fig.axes if a.get_title()]) >= 1 + 3 * 2                # scores, then 3 panels per method
    with pytest.raises(FileNotFoundError, match='not a sweep record'):
        load_record(out)
    assert rec['meta']['settings']['pad'] == 'repeat' and 'method' not in rec['meta']['settings']
    own = load_record(out.parent / 'local-record')                              # --record on the sweep itself
    assert 'record of local: local-record' in local_sweep[1]
    assert own['meta']['command'].endswith('--record local-record')
    assert own['runs'].equals(rec['runs']) and own['predictions'].equals(rec['predictions'])


def test_records_merge(local_sweep, cli, tmp_path):
    # 25_summary: a spec run in parts is one record; a field one part states only as a setting becomes a column
    import json, shutil
    from patchmix_nb.summary import load_record, merge_records, plot_record
    out, _ = local_sweep
    assert cli('sweep', '--status', out, '--record', tmp_path / 'a')[0] == 0
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    meta = json.loads((tmp_path / 'b' / 'record.json').read_text())
    meta['settings']['pad'] = 'zero'                                   # as if part b had run with pad=zero
    (tmp_path / 'b' / 'record.json').write_text(json.dumps(meta))
    rc, stdout, stderr = cli('sweep', '--merge-records', tmp_path / 'a', tmp_path / 'b', '--record', tmp_path / 'ab')
    assert rc == 0 and f"record of 2 records: {tmp_path / 'ab'}" in stdout, stderr
    ab, a = load_record(tmp_path / 'ab'), load_record(tmp_path / 'a')
    assert ab['meta']['groups'] == ['method', 'pad'] and ab['meta']['runs'] == 8
    assert ab['meta']['seconds'] == pytest.approx(2 * a['meta']['seconds'])
    assert 'pad' not in ab['meta']['settings'] and len(ab['meta']['parts']) == 2
    assert ab['runs'][['method', 'pad']].values.tolist() == [['ce', 'repeat']] * 2 + [['ce', 'zero']] * 2 + \
        [['patchmix_cl', 'repeat']] * 2 + [['patchmix_cl', 'zero']] * 2          # ordered by method, stably
    for k in ('history', 'predictions', 'tsne'):
        assert len(ab[k]) == 2 * len(a[k]) and ab[k].groupby('pad').size().tolist() == [len(a[k])] * 2
    fig = plot_record(ab, select={'pad': 'zero'})
    assert sorted(a.get_title() for a in fig.axes if a.get_title().endswith('seeds')) == \
        ['ce pad=zero, 2 seeds', 'patchmix_cl pad=zero, 2 seeds']          # the confusion matrices of part b only
    with pytest.raises(ValueError, match=r"a run is in two records: ce_seed0"):
        merge_records([tmp_path / 'a', tmp_path / 'a'], tmp_path / 'aa')
    del meta['settings']['pad']
    (tmp_path / 'b' / 'record.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"/b: its runs.csv has no 'pad' column and its record.json no 'pad' setting"):
        merge_records([tmp_path / 'ab', tmp_path / 'b'], tmp_path / 'x')
    with pytest.raises(ValueError, match="select: \\['seed'\\] not among the groups' fields"):
        plot_record(ab, select={'seed': 1})
