"""The tests that need the single-node Slurm test cluster (tests/slurm_cluster.py), in one file so that one
pytest-xdist worker starts one cluster (scripts/test deals the suite out by file): the sweep's grid as Slurm jobs
gives the local sweep's runs, and a job signalled mid-epoch (Slurm's USR2 before a time limit) is requeued, shows as
`requeued` while it waits, and resumes to the uninterrupted run's metrics."""
import json, re

import pandas as pd

from patchmix_nb.runs import PARTIAL, STOPPED, RunFolder
from test_sweep import GRID, TINY, _scores, cli, local_sweep, patchmix, work              # noqa: F401, F811 (fixtures)
from test_preempt import SWEEP_TINY, _training, _values, _wait, one_thread, reference    # noqa: F401, F811 (fixtures)


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


def test_slurm_signal_mid_epoch_requeues_and_resumes(slurm_cluster, tmp_path, reference, capsys):
    "Slurm's warning (USR2) during training: partial.pt, the job requeued (the run `requeued`, not failed), resumed."
    from patchmix_nb.cli import main
    out = tmp_path / 'sweep'
    assert main([str(a) for a in ('sweep', *SWEEP_TINY, '--executor', 'slurm', '--slurm-cpus-per-run', 1,
                                  '--slurm-time', 10, '--slurm-signal-delay', 30, '--slurm-max-requeue', 1,
                                  '--no-wait', '--out', out)]) == 0
    run = next(out.glob('*/sweep.json')).parent
    job = json.loads((run / '.job.json').read_text())['job_id']
    _wait('the training cell', lambda: _training(run), 600)
    slurm_cluster.sh('scancel', '--signal=USR2', job)                 # as Slurm does --signal seconds before the limit
    seen = []
    def state(*end):
        seen.append(RunFolder(run).state())
        return seen[-1] in end
    _wait('the run requeued', lambda: state('requeued', 'ok', 'failed'), 300)
    assert seen[-1] == 'requeued' and 'failed' not in seen, seen           # not failed while it waits
    assert json.loads((run / STOPPED).read_text())['saved'] == PARTIAL and (run / PARTIAL).exists()
    assert not (run / 'experiment-failed.ipynb').exists()
    capsys.readouterr()
    assert main(['sweep', '--status', str(out)]) == 0
    assert '0/1 done, 0 running, 0 failed, 1 requeued (1 requeue in all), 0 queued' in capsys.readouterr().out
    slurm_cluster.sh('scontrol', 'update', f'JobId={job}', 'StartTime=now')   # Slurm holds a requeued job 2 min
    _wait('the run to end', lambda: state('ok', 'failed'), 600)
    ex = json.loads((run / 'execution.json').read_text())
    assert (ex['status'], ex['requeues'], ex['resumed']) == ('ok', 1, True), ex
    assert not (run / 'experiment-failed.ipynb').exists() and not (run / PARTIAL).exists()
    log = ''.join(''.join(o.get('text', '')) for c in json.loads((run / 'experiment.ipynb').read_text())['cells']
                  for o in c.get('outputs', []))
    assert re.search(r"resumed \S*partial.pt at epoch \d, step \d", log), log
    assert _values(run / 'metrics.json') == _values(reference / 'metrics.json')
    capsys.readouterr()
    assert main(['sweep', '--status', str(out)]) == 0
    assert '1/1 done, 0 running, 0 failed, 0 requeued (1 requeue in all), 0 queued' in capsys.readouterr().out
