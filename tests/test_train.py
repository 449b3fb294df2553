"""Training loop: determinism, resume, selection, checkpoints, pretrained loading (tiny settings, CPU)."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from patchmix_nb.ast import AST, ast_config
from patchmix_nb.train import (Config, MovingAverageUpdate, cosine_lr, evaluate_run, load_checkpoint, load_data,
                               make_config, predict_recording, summarize, train)

TINY = dict(synthetic_recordings=48, duration=2.0, epochs=2, max_steps=2, batch_size=8, progress=False)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "One tiny patchmix_cl run shared by several tests."
    out = tmp_path_factory.mktemp('run') / 'pmcl'
    metrics = train(make_config('cpu-demo', out_dir=str(out), **TINY), log=None)
    return out, metrics


def _weights(path):
    ck = load_checkpoint(path)
    return {k: v for k, v in ck['model'].items()}


def test_run_folder_and_metrics(run_dir):
    out, m = run_dir
    assert sorted(p.name for p in out.iterdir()) == ['best.pt', 'config.json', 'last.pt', 'metrics.json']
    saved = json.loads((out / 'metrics.json').read_text())
    assert [h['epoch'] for h in saved['history']] == [1, 2]
    for part in ('test', 'val'):
        assert set(saved[part]) >= {'sp', 'se', 'score'}
        assert 0 <= saved[part]['score'] <= 100
        assert saved[part]['score'] == pytest.approx((saved[part]['sp'] + saved[part]['se']) / 2)
    assert saved['test'] == saved['history'][saved['selected_epoch'] - 1]['test']
    assert Config.from_dict(json.loads((out / 'config.json').read_text())).method == 'patchmix_cl'


def test_resume_equals_uninterrupted(tmp_path, run_dir):
    "An interrupted run resumed from last.pt ends with the same metrics and weights as an uninterrupted one."
    out_ref, m_ref = run_dir
    out = tmp_path / 'interrupted'
    cfg = make_config('cpu-demo', out_dir=str(out), **TINY)
    first = train(cfg, stop_after=1, log=None)
    assert first['epochs_done'] == 1 and load_checkpoint(out / 'last.pt')['epoch'] == 1
    resumed = train(cfg, resume=True, log=None)
    assert [h['epoch'] for h in resumed['history']] == [1, 2]
    for a, b in zip(resumed['history'], m_ref['history']):
        assert a['test'] == b['test'] and a['val'] == b['val'] and a['loss'] == pytest.approx(b['loss'], abs=0)
    wa, wb = _weights(out / 'last.pt'), _weights(out_ref / 'last.pt')
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_resume_refuses_a_different_config(tmp_path, run_dir):
    out, _ = run_dir
    cfg = make_config('cpu-demo', out_dir=str(out), **{**TINY, 'lr': 1e-2})
    with pytest.raises(ValueError, match=r"last.pt: cannot resume.*lr"):
        train(cfg, resume=True, log=None)


def test_seeds_change_results_and_same_seed_repeats(tmp_path):
    cfg = make_config('cpu-demo', method='ce', out_dir=str(tmp_path / 'a'), **{**TINY, 'epochs': 1})
    a = train(cfg, log=None)
    b = train(replace(cfg, out_dir=str(tmp_path / 'b')), log=None)
    c = train(replace(cfg, out_dir=str(tmp_path / 'c'), seed=7), log=None)
    assert a['history'][0]['loss'] == b['history'][0]['loss']
    assert a['history'][0]['loss'] != c['history'][0]['loss']


def test_evaluate_reproduces_selected_epoch(run_dir):
    out, m = run_dir
    r = evaluate_run(out / 'best.pt')
    assert r['score'] == pytest.approx(m['test']['score'], abs=1e-6)
    assert np.array(r['confusion']).sum() == r['n']


def test_predict_recording_with_and_without_annotation(run_dir):
    out, _ = run_dir
    d = load_data(make_config('cpu-demo', duration=2.0, synthetic_recordings=48))
    rec = d.index.recordings.iloc[0]
    with_txt = predict_recording(out / 'best.pt', rec.wav, rec.txt)
    assert len(with_txt) == rec.n_cycles and {'pred', 'label', 'p_normal'} <= set(with_txt.columns)
    np.testing.assert_allclose(with_txt.filter(like='p_').sum(axis=1), 1, atol=1e-3)
    windows = predict_recording(out / 'best.pt', rec.wav)
    assert len(windows) == int(np.ceil(rec.duration / 2.0 - 1e-9)) and windows.start.iloc[1] == 2.0


def test_summarize_selection_protocols():
    cfg = Config()
    h = [{'epoch': 1, 'loss': 1., 'val': {'sp': 90., 'se': 10., 'score': 50.}, 'test': {'sp': 80., 'se': 20., 'score': 50.}},
         {'epoch': 2, 'loss': 1., 'val': {'sp': 60., 'se': 20., 'score': 40.}, 'test': {'sp': 90., 'se': 40., 'score': 65.}}]
    m = summarize(h, cfg)
    assert m['selected_epoch'] == 1 and m['test']['score'] == 50.        # chosen on validation
    assert m['upstream_best_on_test']['epoch'] == 2                      # the reference's test-set selection
    h[0]['val']['se'] = h[1]['val']['se'] = 1.0                          # no epoch passes Se > 5 on validation
    assert summarize(h, cfg)['selected_by'].startswith('last epoch')


def test_cosine_schedule_and_ma_update():
    cfg = Config(lr=5e-5, epochs=50)
    assert cosine_lr(cfg, 1) == pytest.approx(4.995e-5, rel=1e-3) and cosine_lr(cfg, 50) == pytest.approx(5e-8)
    bn = torch.nn.BatchNorm1d(3)
    ma = MovingAverageUpdate([bn], 0.5)
    ma.snapshot()
    with torch.no_grad():
        bn.weight.fill_(3.0)
    bn(torch.randn(4, 3))                                                # num_batches_tracked 0 -> 1
    ma.blend()
    assert torch.allclose(bn.weight, torch.full((3,), 2.0))              # 0.5·1 + 0.5·3
    assert bn.num_batches_tracked.item() == 0                            # the reference's int truncation


def test_config_errors():
    with pytest.raises(ValueError, match='needs a local pretrained checkpoint'):
        make_config('paper')
    with pytest.raises(ValueError, match='pretrained checkpoint not found'):
        make_config(pretrained='/nonexistent/ckpt.pth')
    with pytest.raises(ValueError, match='method must be one of'):
        make_config(method='supcon')
    with pytest.raises(ValueError, match='unknown config keys'):
        Config.from_dict({'lr': 1e-3, 'learning_rate': 1e-3})


def test_train_from_official_ast_checkpoint(tmp_path):
    "A (tiny) checkpoint in the official AudioSet layout, 12 x 101 grid, is adapted to the run's grid and trained."
    torch.manual_seed(0)
    src = AST(n_frames=1024, **ast_config('ast-tiny'))
    sd = {f'module.v.{k}': v for k, v in src.state_dict().items()}
    sd.update({'module.mlp_head.0.weight': torch.ones(192), 'module.mlp_head.0.bias': torch.zeros(192),
               'module.mlp_head.1.weight': torch.zeros(527, 192), 'module.mlp_head.1.bias': torch.zeros(527)})
    ck = tmp_path / 'audioset_tiny.pth'
    torch.save(sd, ck)
    out = tmp_path / 'run'
    m = train(make_config('cpu-demo', pretrained=str(ck), out_dir=str(out), **{**TINY, 'epochs': 1, 'lr': 0.0,
                                                                              'ma_beta': 0.0, 'specaug': 'off'}), log=None)
    w = load_checkpoint(out / 'last.pt')['model']
    assert torch.equal(w['blocks.0.attn.qkv.weight'], src.state_dict()['blocks.0.attn.qkv.weight'])  # lr 0: unchanged
    assert w['pos_embed'].shape == (1, 2 + 12 * 19, 192)                                                # 2 s clips
    assert m['epochs_done'] == 1
