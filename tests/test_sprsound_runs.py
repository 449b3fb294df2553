"""SPRSound through the workbench: stats, prepare, train, eval, predict on a synthetic SPRSound folder, and an ICBHI run
evaluated on it (the class mapping, scores per official test set). In-process `patchmix_nb.cli.main` calls."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from patchmix_nb.cli import main
from patchmix_nb.config import Config, make_config
from patchmix_nb.data import ICBHI_OF_EVENT, EventTask, SOURCES, load_data, resolve_dataset
from patchmix_nb.icbhi import CLASSES
from patchmix_nb.inference import evaluate_run, on_dataset
from patchmix_nb.sprsound import EVENT_LABELS, load_index, make_synthetic_sprsound

SMOKE = ['--preset', 'smoke', '--device', 'cpu', '--no-progress', '--precision', 'fp32', '--max-steps', '1',
         '--no-report-best-on-test']


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> Path:
    return make_synthetic_sprsound(tmp_path_factory.mktemp('spr') / 'SPRSound', recordings=16, seed=3)


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('cache')


def run_main(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope='module')
def spr_run(folder, cache, tmp_path_factory) -> Path:
    "A tiny SPRSound run (task 1-2 by default, the folder recognised by its layout): one epoch of three steps."
    run = tmp_path_factory.mktemp('runs') / 'spr'
    assert main(['train', *SMOKE, '--data', str(folder), '--cache', str(cache), '--out', str(run)]) == 0
    return run


def test_stats_prints_splits_records_and_events(folder, capsys):
    s = load_index(folder).stats()
    rc, out, err = run_main(capsys, 'stats', folder)
    assert rc == 0 and err == ''
    assert f"recordings 16  patients {s['patients']}  events {s['events']}" in out
    for name, sp in s['splits'].items():
        assert f"{name:10s}: {sp['recordings']:4d} recordings" in out
    rc, out, _ = run_main(capsys, 'stats', folder, '--json', '--dataset', 'sprsound')
    assert rc == 0 and json.loads(out)['event_types'] == s['event_types']


def test_stats_refuses_icbhi_options_and_wrong_dataset_in_one_line(folder, capsys):
    rc, _, err = run_main(capsys, 'stats', folder, '--test-fold', 'official-disjoint')
    assert rc == 2 and err.count('\n') == 1 and '--test-fold is for ICBHI folders' in err
    rc, _, err = run_main(capsys, 'stats', folder.parent, '--dataset', 'sprsound')
    assert rc == 2 and err.count('\n') == 1 and 'not an SPRSound folder' in err


def test_prepare_caches_every_event_and_the_run_reuses_it(folder, cache, capsys):
    n = len(load_index(folder).events)
    rc, out, err = run_main(capsys, 'prepare', folder, '--cache', cache, '--duration', '2', '--no-progress')
    assert rc == 0, err
    assert f": {n} events, features ({n}, 198, 128) float16" in out
    d = load_data(make_config('smoke', data_dir=str(folder), cache=str(cache)))
    assert str(d.cache.path) in out                                  # the same cache: nothing computed twice
    assert d.task.names == EVENT_LABELS and (d.labels == [EVENT_LABELS.index(t) for t in d.cache.cycles.type]).all()


def test_splits_follow_the_official_test_sets(folder, cache):
    cfg = make_config('smoke', data_dir=str(folder), cache=str(cache), val_fraction=0.3)
    d = load_data(cfg)
    sub = d.cache.cycles['subset'].to_numpy()
    assert set(sub[d.split == 'test']) == {'intra-test', 'inter-test'} and set(sub[d.split != 'test']) == {'train'}
    pat = d.cache.cycles['patient'].to_numpy()
    assert len(d.rows('val')) and not set(pat[d.split == 'val']) & set(pat[d.split == 'train'])
    inter = load_data(replace(cfg, test_fold='inter'))
    assert set(sub[inter.split == 'test']) == {'inter-test'} and set(sub[inter.split == 'excluded']) == {'intra-test'}
    w = d.class_weights().numpy()                                   # inverse frequency over the training events
    counts = np.bincount(d.labels[d.rows('train')], minlength=7)
    assert np.isclose(w.sum(), 1) and all(w[i] > w[j] for i in range(7) for j in range(7) if 0 < counts[i] < counts[j])


def test_dataset_is_recognised_checked_and_mapped(folder):
    assert make_config(data_dir=str(folder)).dataset == 'sprsound' and make_config(data_dir=str(folder)).n_cls == 7
    assert resolve_dataset(Config(data_dir=str(folder))).dataset == 'sprsound'
    with pytest.raises(ValueError, match=r"n_cls must be 7 \(task 1-2\), 2 \(task 1-1\) or 4"):
        make_config(dataset='sprsound', n_cls=3)
    with pytest.raises(ValueError, match="'official' .both test sets., 'intra' or 'inter'"):
        make_config(data_dir=str(folder), test_fold='official-disjoint')
    assert EventTask(4).label_of_events(EVENT_LABELS).tolist() == [0, 2, 2, 2, 1, 1, 3]
    assert EventTask(2).label_of_events(EVENT_LABELS).tolist() == [0, 1, 1, 1, 1, 1, 1]
    assert {k: CLASSES[v] for k, v in ICBHI_OF_EVENT.items()}['Stridor'] == 'wheeze'
    assert SOURCES['sprsound'].group == 'subset' and SOURCES['icbhi'].group == 'device'


def test_eval_target_follows_the_folder(folder, tmp_path):
    "on_dataset: the folder says which dataset (either way); the model's label set must exist there."
    (tmp_path / 'ICBHI_final_database').mkdir()
    icbhi = str(tmp_path)
    c = on_dataset(Config(dataset='sprsound', n_cls=4, test_fold='inter', data_dir=icbhi))
    assert (c.dataset, c.n_cls, c.test_fold) == ('icbhi', 4, 'official')
    assert on_dataset(Config(n_cls=2, test_fold='3', data_dir=str(folder))).test_fold == 'official'
    with pytest.raises(ValueError, match='no ICBHI label set'):
        on_dataset(Config(dataset='sprsound', data_dir=icbhi))
    with pytest.raises(ValueError, match='diagnosis model cannot be scored on SPRSound'):
        on_dataset(Config(class_split='diagnosis', data_dir=str(folder)))
    assert on_dataset(Config(dataset='sprsound', data_dir=str(folder))).dataset == 'sprsound'   # unchanged


def test_train_eval_predict_on_sprsound(spr_run, folder, cache, capsys):
    cfg = json.loads((spr_run / 'config.json').read_text())
    assert (cfg['dataset'], cfg['n_cls'], cfg['test_fold']) == ('sprsound', 7, 'official')
    m = json.loads((spr_run / 'metrics.json').read_text())
    rc, out, err = run_main(capsys, 'eval', '--ckpt', spr_run / 'best.pt', '--json')
    assert rc == 0, err
    r = json.loads(out)
    assert r['dataset'] == 'sprsound' and r['classes'] == list(EVENT_LABELS)
    assert abs(r['score'] - m['test']['score']) < 1e-6                 # best.pt reproduces the run's test figure
    g = {x['group']: x for x in r['groups']}
    assert set(g) == {'intra-test', 'inter-test', 'all'} and g['intra-test']['n'] + g['inter-test']['n'] == r['n']
    s = g['all']                                                       # SPRSound's Score: ((Se + Sp) / 2 + HS) / 2
    hs = 2 * s['se'] * s['sp'] / (s['se'] + s['sp']) if s['se'] + s['sp'] else 0
    assert np.isclose(s['hs'], hs) and np.isclose(s['spr_score'], ((s['se'] + s['sp']) / 2 + hs) / 2)
    rc, out, _ = run_main(capsys, 'eval', '--ckpt', spr_run / 'best.pt')
    assert rc == 0 and f"test ({r['n']} events)" in out and 'inter-test' in out and 'SPRSound Score' in out
    rec = load_index(folder).recordings.query('n_events > 0').iloc[0]
    rc, out, err = run_main(capsys, 'predict', '--ckpt', spr_run / 'best.pt', rec['wav'], rec['json'], '--json')
    assert rc == 0, err
    rows = json.loads(out)
    assert len(rows) == rec['n_events'] and all(x['label'] == x['event'] for x in rows)   # task 1-2: its own label
    assert all(abs(sum(v for k, v in x.items() if k.startswith('p_')) - 1) < 1e-3 for x in rows)
    rc, _, err = run_main(capsys, 'eval', '--ckpt', spr_run / 'best.pt', '--dataset', 'icbhi')
    assert rc == 2 and err.count('\n') == 1 and 'no ICBHI label set' in err


def test_icbhi_run_evaluated_on_sprsound(folder, cache, tmp_path, capsys):
    run = tmp_path / 'icbhi'
    rc, _, err = run_main(capsys, 'train', *SMOKE, '--out', run)        # the synthetic ICBHI and its shared cache
    assert rc == 0, err
    rc, out, err = run_main(capsys, 'eval', '--ckpt', run / 'best.pt', '--data', folder, '--dataset', 'sprsound',
                            '--cache', cache, '--json')
    assert rc == 0, err
    r = json.loads(out)
    assert r['dataset'] == 'sprsound' and r['classes'] == list(CLASSES)
    cfg = on_dataset(replace(Config.load(run / 'config.json'), data_dir=str(folder), cache=str(cache)))
    assert (cfg.dataset, cfg.n_cls, cfg.test_fold) == ('sprsound', 4, 'official')
    d = load_data(cfg)
    truth = np.bincount(d.labels[d.rows('test')], minlength=4)
    assert np.array(r['confusion']).sum(1).tolist() == truth.tolist()          # the events, mapped to ICBHI classes
    types = d.cache.cycles['type'].to_numpy()[d.rows('test')]
    assert truth.tolist() == np.bincount([ICBHI_OF_EVENT[t] for t in types], minlength=4).tolist()
    g = {x['group']: x for x in r['groups']}
    assert set(g) == {'intra-test', 'inter-test', 'all'} and np.isclose(g['all']['score'], r['score'])
    same = evaluate_run(run / 'best.pt', data_dir=str(folder), cache=str(cache))   # the folder says it by itself
    assert np.isclose(same['score'], r['score']) and same['dataset'] == 'sprsound'
