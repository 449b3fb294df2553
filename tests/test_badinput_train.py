"""Bad input on the training side (train, eval, predict, sweep), run through the CLI as a user runs it.

Each case asserts the exit code (2), that the error is ONE line naming the file (or the value) and what was expected,
and that the dataset folder is byte-for-byte unchanged afterwards. Plus fault tests: `kill -9` while a checkpoint is
being written, and a full disk (a small tmpfs, where this machine lets the test mount one).
"""
import hashlib, json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch

from patchmix_nb.cli import main
from patchmix_nb.icbhi import AUDIO_DIR
from patchmix_nb.synthetic import make_synthetic
from patchmix_nb.runs import load_checkpoint

SMOKE = ['--preset', 'smoke', '--no-progress', '--max-steps', '2']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('syn') / 'set', recordings=12, seed=0)


@pytest.fixture(scope='module')
def run(data, tmp_path_factory):
    "A finished tiny run on `data`: RUN/best.pt, last.pt."
    out = tmp_path_factory.mktemp('runs') / 'ok'
    assert main(['train', *SMOKE, '--data', str(data), '--out', str(out)]) == 0
    return out


def checksums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


def cli(argv, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(argv, capsys, data, *expect):
    "Run, and check: exit 2, one line on stderr, each `expect` in it, the dataset unchanged."
    before = checksums(data)
    rc, out, err = cli(argv, capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2, (rc, out[-500:], err[-2000:])
    assert len(lines) == 1, err
    for e in expect: assert str(e) in lines[0], (e, lines[0])
    assert checksums(data) == before
    return lines[0]


def files(tmp_path):
    "Damaged checkpoints and inputs, made once per test."
    p = {}
    (p.setdefault('empty', tmp_path / 'empty.pt')).write_bytes(b'')
    (p.setdefault('junk', tmp_path / 'junk.pt')).write_bytes(b'PK\x03\x04 this is not a torch zip')
    torch.save({'conv1.weight': torch.zeros(2, 3, 7, 7), 'fc.bias': torch.zeros(1000)}, p.setdefault('resnet', tmp_path / 'resnet18.pth'))
    (p.setdefault('safet', tmp_path / 'model.safetensors')).write_bytes(b'\xff' * 64)
    hf = tmp_path / 'hf'; hf.mkdir(); (hf / 'config.json').write_text('{"patch_size": 16,,}'); p['hf'] = hf
    torch.save({'model': {'w': torch.zeros(1)}, 'config': {'lr': 1.0}}, p.setdefault('badcfg', tmp_path / 'badcfg.pt'))
    return p


TRAIN_CASES = {   # extra args -> text expected in the one-line error
    'temperature-0': (['--temperature', '0'], ['temperature τ must be > 0']),
    'temperature-negative': (['--temperature', '-0.1'], ['temperature τ must be > 0']),
    'max-steps-0': (['--max-steps', '0'], ['max_steps must be >= 1']),
    'duration-0': (['--duration', '0'], ['duration must be > 0']),
    'pos-embed-mode': (['--pos-embed-mode', 'bogus'], ["pos_embed_mode must be one of upstream, canonical; got 'bogus'"]),
    'precision': (['--precision', 'fp8'], ['precision must be one of']),
    'method': (['--method', 'supcon'], ["method must be one of"]),
    'batch-1': (['--batch-size', '1'], ['batch_size >= 2']),
    'diagnosis-n-cls': (['--class-split', 'diagnosis', '--n-cls', '4'], ['n_cls must be one of 2, 3']),
    'val-fraction': (['--val-fraction', '1.5'], ['val_fraction must be in [0, 1)']),
    'test-fold': (['--test-fold', '7'], ["test_fold must be 'official', 'official-disjoint' or 0..4"]),
    'pretrained-missing': (['--pretrained', '/nonexistent/w.pth'], ['/nonexistent/w.pth: pretrained checkpoint not found']),
}


@pytest.mark.parametrize('case', list(TRAIN_CASES))
def test_train_refuses_settings(case, data, tmp_path, capsys):
    extra, expect = TRAIN_CASES[case]
    refused(['train', *SMOKE, '--data', data, '--out', tmp_path / 'r', *extra], capsys, data, *expect)
    assert not (tmp_path / 'r' / 'last.pt').exists()


@pytest.mark.parametrize('which, expect', [('empty', 'empty file'), ('safet', 'safetensors'), ('resnet', 'unrecognised checkpoint layout'),
                                           ('hf', 'config.json'), ('junk', 'cannot read')])
def test_train_refuses_bad_pretrained(which, expect, data, tmp_path, capsys):
    f = files(tmp_path)[which]
    refused(['train', *SMOKE, '--data', data, '--out', tmp_path / 'r', '--pretrained', f], capsys, data, f.name, expect)


@pytest.mark.parametrize('sub', ['.', 'runs/x', AUDIO_DIR])
def test_train_refuses_an_out_folder_inside_the_dataset(sub, data, capsys):
    refused(['train', *SMOKE, '--data', data, '--out', data / sub], capsys, data, 'ICBHI data folder', data, 'read-only')


def test_train_refuses_to_overwrite_a_run(run, data, capsys):
    before = checksums(run)
    refused(['train', *SMOKE, '--data', data, '--out', run], capsys, data, f'{run}: already holds a run', '--resume', '--overwrite')
    assert checksums(run) == before                                    # best.pt, last.pt, metrics untouched


def test_resume_without_last_pt(data, tmp_path, capsys):
    refused(['train', *SMOKE, '--data', data, '--out', tmp_path / 'new', '--resume'], capsys, data, 'last.pt: nothing to resume')


def test_resume_from_an_empty_last_pt(data, tmp_path, capsys):
    (tmp_path / 'r').mkdir(); (tmp_path / 'r' / 'last.pt').write_bytes(b'')
    refused(['train', *SMOKE, '--data', data, '--out', tmp_path / 'r', '--resume'], capsys, data, 'last.pt: empty file')


def test_resume_with_another_config(run, data, tmp_path, capsys):
    shutil.copytree(run, tmp_path / 'r')
    refused(['train', *SMOKE, '--data', data, '--out', tmp_path / 'r', '--resume', '--lr', '0.5'], capsys, data,
            'last.pt: cannot resume', 'lr')


def test_train_data_folder_missing(tmp_path, capsys):
    rc, _, err = cli(['train', *SMOKE, '--data', tmp_path / 'nope', '--out', tmp_path / 'r'], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'nope' in err


@pytest.mark.parametrize('which, expect', [('empty', 'empty file'), ('junk', 'not a readable patchmix checkpoint'),
                                           ('resnet', "expected keys 'model'"), ('badcfg', 'the weights do not fit')])
def test_eval_and_predict_refuse_bad_checkpoints(which, expect, data, tmp_path, capsys):
    f = files(tmp_path)[which]
    refused(['eval', '--ckpt', f, '--data', data], capsys, data, f.name, expect)
    w = sorted((data / AUDIO_DIR).glob('*.wav'))[0]
    refused(['predict', '--ckpt', f, w], capsys, data, f.name, expect)


def test_eval_refuses_missing_and_folder_checkpoints(run, data, tmp_path, capsys):
    refused(['eval', '--ckpt', tmp_path / 'none.pt', '--data', data], capsys, data, 'none.pt: checkpoint not found')
    refused(['eval', '--ckpt', run, '--data', data], capsys, data, f'{run}: is a folder')


def test_eval_refuses_a_checkpoint_whose_config_does_not_fit(run, data, tmp_path, capsys):
    ck = load_checkpoint(run / 'best.pt'); ck['config']['model'] = 'ast-small'
    torch.save(ck, tmp_path / 'mismatch.pt')
    refused(['eval', '--ckpt', tmp_path / 'mismatch.pt', '--data', data], capsys, data, 'mismatch.pt: the weights do not fit')


def test_predict_refuses_a_cycle_past_the_end(run, data, tmp_path, capsys):
    w = sorted((data / AUDIO_DIR).glob('*.wav'))[0]
    t = tmp_path / (w.stem + '.txt'); t.write_text('0.2\t1.0\t0\t0\n1.5\t99.0\t1\t0\n')
    refused(['predict', '--ckpt', run / 'best.pt', w, t], capsys, data, f'{t.name}:2: cycle ends at 99 s, after the end of its audio')


def test_predict_refuses_a_malformed_annotation_and_a_missing_wav(run, data, tmp_path, capsys):
    w = sorted((data / AUDIO_DIR).glob('*.wav'))[0]
    t = tmp_path / (w.stem + '.txt'); t.write_text('0.2\t1.0\t0\t0\n0.5 oops\n')
    refused(['predict', '--ckpt', run / 'best.pt', w, t], capsys, data, f'{t.name}:2')
    refused(['predict', '--ckpt', run / 'best.pt', tmp_path / 'gone.wav'], capsys, data, 'gone.wav')


def test_sweep_refuses_unknown_fields_and_an_out_inside_the_dataset(data, tmp_path, capsys):
    refused(['sweep', '--grid', 'temprature=0.1', '--out', tmp_path / 's', '--data', data], capsys, data, 'temprature', 'temperature')
    refused(['sweep', '--grid', 'seed=one', '--out', tmp_path / 's2', '--data', data], capsys, data, 'seed', 'one')
    refused(['sweep', '--grid', 'seed=0', '--out', data / 'sweep', '--data', data], capsys, data, 'ICBHI data folder')


# ---------------------------------------------------------------------------------------------------- faults

KILL_DURING_SAVE = textwrap.dedent('''
    import os, sys, time, torch
    import patchmix_nb.train as T
    from patchmix_nb.config import make_config
    real_save, signal_file = torch.save, sys.argv[2]
    def slow_save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get('epoch') == 2 and 'optimizer' in obj:   # epoch 2's last.pt
            with open(f, 'wb') as fh: fh.write(b'half a checkpoint')
            open(signal_file, 'w').close(); time.sleep(600)
        return real_save(obj, f, *a, **k)
    T.torch.save = slow_save
    T.train(make_config('smoke', epochs=3, max_steps=2, out_dir=sys.argv[1], progress=False, data_dir=sys.argv[3]), log=None)
''')


def test_kill_9_while_a_checkpoint_is_written_leaves_a_consistent_run(data, tmp_path):
    out, sig = tmp_path / 'r', tmp_path / 'saving'
    p = subprocess.Popen([sys.executable, '-c', KILL_DURING_SAVE, str(out), str(sig), str(data)], env={**os.environ})
    t0 = time.time()
    while not sig.exists():
        assert p.poll() is None, 'the training process ended before epoch 2 was saved'
        assert time.time() - t0 < 300; time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    temps = list(out.glob('.*.tmp'))
    assert temps, 'the interrupted write should leave its temp file'
    last, m = load_checkpoint(out / 'last.pt'), json.loads((out / 'metrics.json').read_text())
    assert last['epoch'] == 1 and m['epochs_done'] == 1                 # one epoch's set: epoch 2 never committed
    assert load_checkpoint(out / 'best.pt')['epoch'] == m['selected_epoch'] == 1
    assert main(['train', '--preset', 'smoke', '--epochs', '3', '--max-steps', '2', '--no-progress', '--data', str(data),
                 '--out', str(out), '--resume']) == 0
    assert not list(out.glob('.*.tmp'))                                 # the dead writer's temp is gone
    assert json.loads((out / 'metrics.json').read_text())['epochs_done'] == 3


@pytest.fixture
def small_disk(tmp_path):
    "A 40 MB tmpfs (room for one epoch's checkpoints of the smoke model, not for a second set of temps)."
    mnt = tmp_path / 'disk'; mnt.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', str(mnt)], capture_output=True, text=True)
    if r.returncode != 0: pytest.skip(f'cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): full-disk test skipped')
    yield mnt
    subprocess.run(['umount', '-l', str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_and_keeps_the_last_complete_epoch(small_disk, data, capsys):
    out = small_disk / 'run'
    rc, _, err = cli(['train', '--preset', 'smoke', '--epochs', '3', '--max-steps', '2', '--no-progress', '--data', data,
                      '--out', out], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert 'no space left on the device' in lines[0] and str(out) in lines[0], lines[0]
    assert not list(out.glob('.*.tmp'))                                 # temps of the failed epoch removed
    if (out / 'last.pt').exists():                                      # whatever was committed is one epoch's set
        last, m = load_checkpoint(out / 'last.pt'), json.loads((out / 'metrics.json').read_text())
        assert m['epochs_done'] == last['epoch'] and load_checkpoint(out / 'best.pt')['epoch'] <= last['epoch']
