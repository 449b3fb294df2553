"""The `patchmix` console script, run as a user runs it (subprocesses, real files)."""
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
ICBHI = Path(os.environ.get('PATCHMIX_ICBHI', ROOT.parent / 'shared' / 'icbhi'))
PATCHMIX = Path(sys.executable).parent / 'patchmix'   # the console script installed with the package
QUICK = ['--epochs', '1', '--max-steps', '2', '--duration', '2', '--batch-size', '8', '--no-progress']


def patchmix(*args, check=True, timeout=600):
    r = subprocess.run([str(PATCHMIX), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    if check and r.returncode != 0:
        raise AssertionError(f"patchmix {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp('data') / 'icbhi'
    patchmix('synth', d, '--recordings', 24, '--seed', 3)
    return d


def test_synth_and_stats_json(small):
    s = json.loads(patchmix('stats', small, '--json').stdout)
    assert s['recordings'] == 24
    assert s['cycles'] == s['splits']['train']['cycles'] + s['splits']['test']['cycles']
    for split in ('train', 'test'):
        c = s['splits'][split]['classes']
        assert sum(c[k] for k in ('normal', 'crackle', 'wheeze', 'both')) == s['splits'][split]['cycles']


@pytest.mark.skipif(not (ICBHI / 'annotations').exists(), reason='real ICBHI annotations (../shared/icbhi) absent')
def test_stats_reproduces_real_icbhi_counts():
    s = json.loads(patchmix('stats', ICBHI / 'annotations', '--split', ICBHI / 'ICBHI_challenge_train_test.txt',
                            '--json').stdout)
    assert (s['recordings'], s['cycles']) == (920, 6898)
    tr, te = s['splits']['train'], s['splits']['test']
    assert (tr['recordings'], tr['cycles'], te['recordings'], te['cycles']) == (539, 4142, 381, 2756)
    assert [tr['classes'][k] for k in ('normal', 'crackle', 'wheeze', 'both')] == [2063, 1215, 501, 363]
    assert [te['classes'][k] for k in ('normal', 'crackle', 'wheeze', 'both')] == [1579, 649, 385, 143]


def test_prepare_builds_then_reuses(small, tmp_path):
    cache = tmp_path / 'cache'
    first = patchmix('prepare', small, '--cache', cache, '--duration', 2, '--no-progress').stdout
    second = patchmix('prepare', small, '--cache', cache, '--duration', 2, '--no-progress').stdout
    assert first.split(':')[0] == second.split(':')[0]          # same cache folder
    assert len([p for p in cache.iterdir() if not p.name.startswith('.')]) == 1
    assert not any(p.name.startswith('.tmp') for p in cache.iterdir())


def test_truncated_wav_is_one_line_error(small, tmp_path):
    bad = tmp_path / 'icbhi'
    patchmix('synth', bad, '--recordings', 6, '--seed', 1)
    wav = sorted((bad / 'ICBHI_final_database').glob('*.wav'))[0]
    data = wav.read_bytes()
    wav.write_bytes(data[:len(data) // 2])                      # header still announces the full length
    r = patchmix('prepare', bad, '--cache', tmp_path / 'cache', '--no-progress', check=False)
    assert r.returncode == 2
    assert wav.name in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_device_and_bad_checkpoint_are_one_line_errors(tmp_path):
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    r = patchmix('eval', '--ckpt', junk, check=False)
    assert r.returncode == 2 and 'junk.pt' in r.stderr and 'Traceback' not in r.stderr
    r = patchmix('train', '--preset', 'paper', check=False)
    assert r.returncode == 2 and 'pretrained' in r.stderr


def test_train_resume_eval_predict(small, tmp_path):
    run = tmp_path / 'run'
    out = patchmix('train', '--data', small, '--method', 'patchmix_cl', '--model', 'ast-tiny', '--seed', 2,
                   '--out', run, *QUICK).stdout
    assert 'Score' in out and str(run) in out
    m = json.loads((run / 'metrics.json').read_text())
    assert {'test', 'val', 'history'} <= set(m) and len(m['history']) == 1
    assert {'sp', 'se', 'score'} <= set(m['test']) and {'sp', 'se', 'score'} <= set(m['val'])
    patchmix('train', '--data', small, '--method', 'patchmix_cl', '--model', 'ast-tiny', '--seed', 2, '--out', run,
             *QUICK[:1], '2', *QUICK[2:], '--resume')
    m2 = json.loads((run / 'metrics.json').read_text())
    assert [h['epoch'] for h in m2['history']] == [1, 2] and m2['history'][0] == m['history'][0]
    ev = json.loads(patchmix('eval', '--ckpt', run / 'best.pt', '--data', small, '--json').stdout)
    assert ev['score'] == pytest.approx(m2['test']['score'], abs=1e-6)
    wav = sorted((small / 'ICBHI_final_database').glob('*.wav'))[0]
    pred = json.loads(patchmix('predict', '--ckpt', run / 'best.pt', wav, wav.with_suffix('.txt'), '--json').stdout)
    assert len(pred) == len(wav.with_suffix('.txt').read_text().strip().splitlines())
    assert {p['pred'] for p in pred} <= {'normal', 'crackle', 'wheeze', 'both'}


def test_train_flags_are_the_config_fields(capsys):
    # every Config field is a flag, read by its field's parser; a preset only where named
    from patchmix_nb.cli import build_parser, config_from_args
    from patchmix_nb.config import make_config
    ap = build_parser()
    a = ap.parse_args(['train', '--preset', 'smoke', '--batch-size', '4', '--no-fused-passes', '--test-fold', '2'])
    assert config_from_args(a) == make_config('smoke', batch_size=4, fused_passes=False, test_fold='2')
    assert config_from_args(ap.parse_args(['train'])) == make_config()          # no preset: the Config defaults
    with pytest.raises(SystemExit):
        ap.parse_args(['train', '--batch-size', 'x'])
    assert "argument --batch-size: batch_size: expected int, got 'x'" in capsys.readouterr().err
    train_help = ap._subparsers._group_actions[0].choices['train'].format_help()
    assert '--method {ce,patchmix_ce,patchmix_cl,mixup,cutmix}' in train_help                # choices shown in help
    a = ap.parse_args(['train', '--method', 'bogus'])                          # ... and checked by the Config, in one line
    with pytest.raises(ValueError, match="method must be one of ce, patchmix_ce, patchmix_cl, mixup, cutmix; got 'bogus'"):
        config_from_args(a)
