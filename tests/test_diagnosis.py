"""The diagnosis task end to end, from the command line: `--class-split diagnosis` alone trains 3 classes, and eval
and predict name them healthy / chronic / non-chronic (embeddings and "what the model hears" are tested on such a
run in test_hears.py)."""
import contextlib, io, json

import numpy as np
import pytest

from patchmix_nb.cli import main
from patchmix_nb.config import Config
from patchmix_nb.data import load_data

DX = ['healthy', 'chronic', 'non-chronic']


def _cli(*args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out): rc = main([str(a) for a in args])
    assert rc == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope='module')
def dx_run(tmp_path_factory):
    run = tmp_path_factory.mktemp('dx') / 'run'
    _cli('train', '--preset', 'smoke', '--class-split', 'diagnosis', '--out', run, '--no-progress')
    return run


def test_train_with_class_split_diagnosis_alone_is_a_3_class_run(dx_run):
    cfg = Config.load(dx_run / 'config.json')
    assert (cfg.class_split, cfg.n_cls) == ('diagnosis', 3)
    m = json.loads((dx_run / 'metrics.json').read_text())
    assert m['test']['score'] == pytest.approx((m['test']['sp'] + m['test']['se']) / 2)


def test_eval_and_predict_name_the_diagnosis_classes(dx_run):
    ev = json.loads(_cli('eval', '--ckpt', dx_run / 'best.pt', '--json'))
    conf = np.array(ev['confusion'])
    assert ev['classes'] == DX and conf.shape == (3, 3) and conf.sum() == ev['n']
    data = load_data(Config.load(dx_run / 'config.json'))
    assert conf.sum(1).tolist() == np.bincount(data.labels[data.rows('test')], minlength=3).tolist()   # true rows
    rec = data.index.recordings.iloc[0]
    pred = json.loads(_cli('predict', '--ckpt', dx_run / 'best.pt', rec.wav, rec.txt, '--json'))
    assert len(pred) == rec.n_cycles and {p['pred'] for p in pred} <= set(DX)
    assert {f'p_{c}' for c in DX} <= set(pred[0]) and 'label' not in pred[0]   # the annotation holds no diagnosis
