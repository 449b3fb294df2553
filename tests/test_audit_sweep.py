"""Issue 18, the hostile-input audit at the sweep / launch / config / experiment-notebook boundary: every value that
reaches a batch script, a path or a Config is checked where it enters, in one line. One test per defect, in process
(no Slurm cluster, no notebook kernel: the experiment notebook's parameter cells run on papermill's own injection)."""
import json, os, time
from pathlib import Path

import pytest

from patchmix_nb.cli import MAX_ERROR, main
from patchmix_nb.config import Config, make_config
from patchmix_nb.launch import SlurmExecutor, check_slurm, worker_envs
from patchmix_nb.sweep import MAX_POINTS, load_spec, plan_sweep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'nbs' / 'experiments' / 'experiment.ipynb'


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    "`patchmix sweep ... --dry-run --out OUT` in this process, from tmp_path: (exit status, stdout, stderr)."
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PATCHMIX_HOME', os.environ.get('PATCHMIX_HOME') or str(tmp_path / 'home'))
    def run(*args):
        capsys.readouterr()
        rc = main(['sweep', '--preset', 'smoke', '--out', 'out', '--dry-run', *map(str, args)])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def refused(r, *needles):
    "Exit status 2 with one error line (no traceback) of at most MAX_ERROR characters, holding every needle."
    rc, _, err = r
    assert rc == 2 and err.count('\n') == 1, r
    assert len(err) <= len('patchmix sweep: error: \n') + MAX_ERROR, len(err)
    for n in needles: assert n in err, (n, err)
    return err


# 1. a newline in a Slurm value adds a line to the sbatch script, which runs as shell
HOSTILE = [{'partition': 'gpu\ntouch /tmp/pwned'}, {'mem': '4G\nrm -rf ~'}, {'time': '10\nid'},
           {'extra': {'account': 'lab\ntouch /tmp/pwned #'}}, {'extra': {'k\nl': 1}}, {'extra': {'qos': ['a', 'b']}},
           {'cpus_per_run': '4\n'}, {'array_parallelism': True}, {'partitoin': 'gpu'}]


@pytest.mark.parametrize('slurm', HOSTILE, ids=lambda s: next(iter(s)))
def test_slurm_values_that_could_add_a_script_line_are_refused(slurm, tmp_path):
    with pytest.raises(ValueError, match=r'^(slurm |unknown slurm options)'):
        SlurmExecutor(tmp_path, slurm)
    with pytest.raises(ValueError, match='control character'):
        SlurmExecutor(tmp_path / 'a\nb', {})


def test_sbatch_script_holds_one_line_per_option(tmp_path):
    "The script submitit writes from the executor's options: the parameters are #SBATCH lines only, one each."
    submitit = pytest.importorskip('submitit')
    slurm = {'partition': 'gpu,debug', 'mem': '32G', 'time': '1-00:00:00', 'cpus_per_run': 2, 'gpus_per_run': 1,
             'extra': {'account': "lab 'x' y", 'comment': 'a;b$(id)', 'exclusive': True}}
    ex = SlurmExecutor(tmp_path / 'sweep out', slurm)
    sub = submitit.SlurmExecutor(folder=tmp_path / 'sweep out' / '.slurm' / '%j')
    sub.update_parameters(**{k: v for k, v in ex.params.items() if v not in (None, {})})
    text = sub._make_submission_file_text('python -u -m submitit.core._submit x', 'uid')
    head = text.split('# Parameters\n')[1].split('\n\n')[0].splitlines()
    assert all(line.startswith('#SBATCH --') for line in head), head
    assert sum(line.startswith('#SBATCH --account=') for line in head) == 1


def test_cli_refuses_a_newline_in_slurm_flags_before_planning(cli):
    refused(cli('--executor', 'slurm', '--slurm-partition', 'gpu\nrm -rf ~'), 'slurm partition: expected')
    refused(cli('--executor', 'slurm', '--slurm-extra', 'account="lab\\ntouch x"'), 'slurm extra account')
    refused(cli('--executor', 'slurm', '--slurm-extra', 'qos=a', '--slurm-extra', 'qos=b'), "'qos' given twice")


# 2. grids that silently dropped values
@pytest.mark.parametrize('args,needle', [
    (['--grid', 'seed=1', 'seed=2'], '--grid seed given twice'),
    (['--grid', 'seed=1,2', '--seeds', '3'], 'seed given twice, in the grid and as --seeds'),
    (['--grid', 'method=ce', '--methods', 'patchmix_cl'], 'method given twice'),
    (['--grid', 'lr=0.1,0.2', '--lr', '0.3'], 'lr: an axis of the grid and also a setting of every run'),
    (['--set', 'lr=0.1', '--set', 'lr=0.2'], '--set lr given twice'),
    (['--set', 'lr=0.1', '--lr', '0.2'], 'lr given both as --set and as a flag')])
def test_a_field_given_twice_is_refused(cli, args, needle):
    refused(cli(*args), needle)


def test_seeds_and_methods_still_set_the_axes(cli):
    rc, out, _ = cli('--methods', 'ce', '--seeds', 1, 2)
    assert rc == 0 and 'ce_seed1' in out and 'ce_seed2' in out
    rc, out, _ = cli('--spec', 'folds', '--preset', 'smoke', '--seeds', 7)        # a spec's axis is replaced
    assert rc == 0 and 'ce_fold0_seed7' in out and 'seed1' not in out


# 3. unbounded input: YAML alias bombs, error lines of millions of characters
def _bomb(levels=9, width=9) -> str:
    lines = ['a0: &a0 [' + ', '.join(['lol'] * width) + ']']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return '\n'.join(lines)


@pytest.mark.parametrize('where', ['set: {model: *a8}\ngrid: {seed: [1]}', 'grid: {model: *a8}'])
def test_yaml_alias_bomb_is_refused_at_once(cli, tmp_path, where):
    spec = tmp_path / 'bomb.yaml'
    spec.write_text(_bomb() + '\n' + where + '\n')
    t0 = time.time()
    refused(cli('--spec', spec), 'expands to', 'through its aliases')
    assert time.time() - t0 < 5


def test_spec_key_given_twice_is_refused(tmp_path):
    spec = tmp_path / 's.yaml'
    spec.write_text('grid: {method: [ce]}\ngrid: {seed: [1, 2]}\n')
    with pytest.raises(ValueError, match=r"s\.yaml:2: not valid YAML .*key 'grid' given twice"):
        load_spec(spec)


def test_error_lines_are_capped(cli):
    err = refused(cli('--grid', 'seed=1', '--set', 'model=' + 'x' * 200_000), 'run seed1: method')
    assert err.rstrip().endswith('...')


# 4. a grid of a million points planned for minutes
def test_huge_grid_is_refused_before_it_is_expanded(cli):
    t0 = time.time()
    err = refused(cli('--grid', 'seed=' + ','.join(map(str, range(1000))), 'lr=' + ','.join(['0.1'] * 1000)),
                  'the grid has 1000000 points (1000 seed x 1000 lr)', f'at most {MAX_POINTS}', 'split it')
    assert time.time() - t0 < 5, err


# 5. out_dir given for every run: a TypeError from deep inside
def test_out_dir_as_a_setting_is_refused(cli, tmp_path):
    refused(cli('--set', 'out_dir=elsewhere'), "--set out_dir: each run's folder is the sweep's")
    spec = tmp_path / 's.yaml'
    spec.write_text('grid: {method: [ce]}\nset: {out_dir: elsewhere}\n')
    refused(cli('--spec', spec), "out_dir in the spec's set")
    refused(cli('--set', 'preset=paper'), '--set preset: give it as --preset')


# 6. the Config checks the type of every field
def test_config_refuses_values_of_the_wrong_type(tmp_path):
    with pytest.raises(ValueError, match='epochs: expected int, got 1.5'): make_config('smoke', epochs=1.5)
    with pytest.raises(ValueError, match="run ce: lr: expected float, got 'abc'"):
        plan_sweep(tmp_path, [{'method': 'ce'}], 'smoke', lr='abc')
    (tmp_path / 'config.json').write_text(json.dumps({**Config().to_dict(), 'batch_size': 8.5}))
    with pytest.raises(ValueError, match='batch_size: expected int, got 8.5'): Config.load(tmp_path / 'config.json')
    assert make_config('smoke', data_dir=tmp_path).data_dir == str(tmp_path)          # a Path is kept as text


# 7. the experiment notebook's parameters, injected by papermill itself (-p typed, -r raw text)
def run_parameters(tmp_path, **parameters):
    "The notebook's cells up to its dry run, after papermill's injection, in this process: the namespace."
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {'out_dir': str(tmp_path / 'r'), **parameters})
    ns = {}
    for c in nb.cells:
        if c.cell_type != 'code': continue
        exec('\n'.join(line for line in c.source.splitlines() if not line.startswith('%')), ns)
        if c.get('id') == 'dry1': return ns
    raise AssertionError('no dry-run cell')


@pytest.mark.parametrize('params,needle', [
    ({'epochs': 'abc'}, "epochs: expected int, got 'abc'"),
    ({'epochs': 1.5, 'dry_run': True}, 'epochs: expected int, got 1.5'),
    ({'lrr': 0.1}, "unknown Config field 'lrr'"),
    ({'resume': 'maybe'}, "resume: expected bool, got 'maybe'"),
    ({'dry_run': 'perhaps'}, "dry_run: expected bool, got 'perhaps'")])
def test_experiment_notebook_refuses_bad_parameters(tmp_path, params, needle):
    with pytest.raises(ValueError) as e: run_parameters(tmp_path, **params)
    assert needle in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'r' / 'config.json').exists()


def test_experiment_notebook_reads_raw_text_parameters(tmp_path):
    "papermill -r gives text: '3' is the seed 3, 'False' is False (a non-empty string was true: a dry run)."
    ns = run_parameters(tmp_path, seed='3', dry_run='True')
    assert ns['cfg'].seed == 3 and json.loads((tmp_path / 'r' / 'config.json').read_text())['seed'] == 3
    ns = run_parameters(tmp_path / 'b', dry_run='False', resume='no', preset='none')
    assert ns['dry_run'] is False and ns['resume'] is False and ns['cfg'].preset is None
    assert not (tmp_path / 'b' / 'r' / 'config.json').exists()


# 8. a relative PATCHMIX_HOME meant the notebook's folder, not the one it was typed in
def test_relative_patchmix_home_is_pinned_where_typed(cli, tmp_path, monkeypatch):
    monkeypatch.setenv('PATCHMIX_HOME', 'home')
    assert worker_envs(1, gpus=[])[0]['PATCHMIX_HOME'] == str(tmp_path / 'home')
    monkeypatch.setenv('PATCHMIX_HOME', 'home2')
    rc, _, _ = cli('--method', 'ce')
    assert rc == 0 and os.environ['PATCHMIX_HOME'] == str(tmp_path / 'home2')


def test_check_slurm_keeps_good_values():
    s = {'partition': 'gpu', 'time': 90, 'mem': '8G', 'extra': {'account': 'lab'}, 'gpus_per_run': None}
    assert check_slurm(s) == {'partition': 'gpu', 'time': 90, 'mem': '8G', 'extra': {'account': 'lab'}}
