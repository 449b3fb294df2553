"Tests of patchmix_nb.hears: attention recomputed from the blocks, rollout, the token grid, gradient saliency."
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from patchmix_nb.ast import AST, ast_config
from patchmix_nb.config import make_config
from patchmix_nb.data import Task, load_data
from patchmix_nb.embeddings import extract_embeddings, run_data
from patchmix_nb.hears import (HearsBrowser, attention_rollout, attention_weights, explain, grid_to_pixels,
                               pick_examples, plot_examples, predict_rows, record_attention, rollout_grid, saliency)
from patchmix_nb.inference import load_run
from patchmix_nb.model import PatchMixModel
from patchmix_nb.train import train


def tiny(n_frames=58, pool='cls', seed=0):
    torch.manual_seed(seed)
    return AST(n_frames=n_frames, n_mels=128, pool=pool, **ast_config('ast-tiny')).eval()   # grid 12 x (n_frames-6)//10


def test_recomputed_attention_is_the_blocks():
    m = tiny()
    x = torch.randn(2, 1, 58, 128)
    seen = []
    hooks = [b.attn.register_forward_hook(lambda mod, a, o: seen.append((a[0], o))) for b in m.blocks]
    with torch.no_grad(), record_attention(m) as maps:
        m(x)
    for h in hooks: h.remove()
    assert len(maps) == 4 and maps[0].shape == (2, 3, 62, 62)          # 2 + 12*5 tokens
    for blk, A, (inp, out) in zip(m.blocks, maps, seen):
        B, N, D = inp.shape
        v = blk.attn.qkv(inp).reshape(B, N, 3, 3, -1).permute(2, 0, 3, 1, 4)[2]
        assert torch.allclose(blk.attn.proj((A @ v).transpose(1, 2).reshape(B, N, D)), out, atol=1e-5)
        assert torch.allclose(A.sum(-1), torch.ones(B, 3, N), atol=1e-5)
    assert all(len(b.attn._forward_hooks) == 0 for b in m.blocks)      # hooks removed on exit
    with torch.no_grad(): m(x)
    assert len(maps) == 4                                               # nothing recorded after the block


def test_attention_weights_unfused_reference():
    m = tiny()
    attn = m.blocks[0].attn
    x = torch.randn(1, 7, 192)
    q, k, _ = attn.qkv(x).reshape(1, 7, 3, 3, 64).permute(2, 0, 3, 1, 4)
    ref = torch.softmax(q @ k.transpose(-2, -1) / 8.0, -1)             # √64 = 8
    assert torch.allclose(attention_weights(attn, x), ref, atol=1e-6)


def test_rollout_rows_sum_to_one_and_identity():
    g = torch.Generator().manual_seed(0)
    attns = [torch.rand(3, 2, 9, 9, generator=g).softmax(-1) for _ in range(5)]
    R = attention_rollout(attns)
    assert R.shape == (3, 9, 9)
    assert torch.allclose(R.sum(-1), torch.ones(3, 9), atol=1e-5)
    assert (R >= 0).all()
    eye = torch.eye(9).expand(3, 2, 9, 9)
    assert torch.equal(attention_rollout([eye] * 4), torch.eye(9).expand(3, 9, 9))
    assert torch.equal(attention_rollout([eye] * 4, residual=False), torch.eye(9).expand(3, 9, 9))


def test_rollout_by_hand_order_and_fusion():
    A1 = torch.tensor([[[[0., 1.], [1., 0.]]]])                         # swap
    A2 = torch.tensor([[[[1., 0.], [1., 0.]]]])                         # everyone reads token 0
    R = attention_rollout([A1, A2], residual=False)
    assert torch.equal(R[0], A2[0, 0] @ A1[0, 0])                       # = [[0, 1], [0, 1]]: later layer on the left
    assert torch.equal(R[0], torch.tensor([[0., 1.], [0., 1.]]))
    two = torch.stack([A1[0, 0], A2[0, 0]])[None]                       # 2 heads
    assert torch.allclose(attention_rollout([two], residual=False)[0], (A1[0, 0] + A2[0, 0]) / 2)
    with pytest.raises(ValueError, match='head_fusion'):
        attention_rollout([two], head_fusion='median')
    with pytest.raises(ValueError, match='at least one'):
        attention_rollout([])


@pytest.mark.parametrize('n_frames,pool', [(58, 'cls'), (198, 'mean'), (798, 'cls')])
def test_rollout_grid_shape_matches_12xT(n_frames, pool):
    m = tiny(n_frames, pool)
    x = torch.randn(1, 1, n_frames, 128)
    with torch.no_grad(), record_attention(m) as maps:
        m(x)
    roll = rollout_grid(attention_rollout(maps), m.grid, m.pool)
    assert m.grid[0] == 12 and roll.shape == (1, *m.grid)
    assert torch.allclose(roll.sum((1, 2)), torch.ones(1), atol=1e-5) and (roll > 0).all()
    px = grid_to_pixels(roll, (n_frames, 128))
    assert px.shape == (1, n_frames, 128)
    assert (px[0, -2:] == 0).all() and (px[0, :, -2:] == 0).all()       # pixels no patch covers
    with pytest.raises(ValueError, match='tokens'):
        rollout_grid(attention_rollout(maps), (12, m.grid[1] + 1))


def test_rollout_grid_cls_versus_mean_rows():
    R = torch.zeros(1, 2 + 6, 2 + 6)
    R[0, :2, 2] = 1.0                                                   # cls/dist read token 0 only
    R[0, 2:, 7] = 1.0                                                   # patches read token 5 only
    assert rollout_grid(R, (2, 3), 'cls')[0].flatten().tolist() == [1, 0, 0, 0, 0, 0]
    assert rollout_grid(R, (2, 3), 'mean')[0].flatten().tolist() == [0, 0, 0, 0, 0, 1]


def test_grid_to_pixels_one_token():
    one = torch.zeros(1, 12, 5); one[0, 2, 1] = 1.0
    px = grid_to_pixels(one, (58, 128))
    nz = px[0].nonzero()
    assert nz.min(0).values.tolist() == [10, 20] and nz.max(0).values.tolist() == [25, 35]   # frames 10..25, mel 20..35
    assert float(px[0, 12, 22]) == pytest.approx(1 / 4)                 # covered by 2 x 2 overlapping patches


class _Region(nn.Module):
    "A 'backbone' that reads only frames 5..9, mel 0..3 of its input."
    num_features = 20
    def forward(self, x): return (x[:, 0, 5:10, :4] ** 2).flatten(1)


def _with_head(backbone, head, input_norm=(0.0, 1.0)):
    "A model of `backbone` whose head g is `head` (a plain Linear: gradients known by hand)."
    model = PatchMixModel(backbone, head.out_features, method='ce', input_norm=input_norm).eval()
    model.head = head
    return model


def test_saliency_nonzero_only_where_input_matters():
    x = torch.randn(2, 1, 20, 8, generator=torch.Generator().manual_seed(0))
    head = nn.Linear(20, 3)
    S, logits = saliency(_with_head(_Region(), head), x)
    assert S.shape == (2, 20, 8) and logits.shape == (2, 3)
    inside = torch.zeros(20, 8, dtype=torch.bool); inside[5:10, :4] = True
    assert (S[:, ~inside] == 0).all() and (S[:, inside] > 0).all()
    c = logits.argmax(1)                                                # default target: the prediction
    w = head.weight[c].view(2, 5, 4)                                    # d logit_c / d x = 2 x w_c
    assert torch.allclose(S[:, inside].view(2, 5, 4), (2 * x[:, 0, 5:10, :4] * w).abs(), atol=1e-6)
    S0, _ = saliency(_with_head(_Region(), head), x, target=[0, 0])
    assert torch.allclose(S0[:, inside].view(2, 5, 4), (2 * x[:, 0, 5:10, :4] * head.weight[0].view(5, 4)).abs(), atol=1e-6)
    S2, _ = saliency(_with_head(_Region(), head, (0.0, 1 / 3)), x, target=c)   # chain rule through the run's scaling
    assert torch.allclose(S2, 9 * S, atol=1e-5)


def test_saliency_finite_difference_on_ast():
    model = _with_head(tiny(), nn.Linear(192, 4))
    m = model.backbone
    x = torch.randn(1, 1, 58, 128, generator=torch.Generator().manual_seed(1))
    S, _ = saliency(model, x, target=1)
    t, f = divmod(int(S[0].argmax()), 128)
    e = torch.zeros_like(x); e[0, 0, t, f] = 1e-2
    with torch.no_grad():
        fd = (model.logits(x + e)[0, 1] - model.logits(x - e)[0, 1]) / 2e-2
    assert float(fd.abs()) == pytest.approx(float(S[0, t, f]), rel=1e-2)
    assert not m.training and x.grad is None                            # the input is left alone


def test_explain_and_examples():
    m = tiny(58, 'mean')
    model = PatchMixModel(m, 4, method='ce', input_norm=(0.5, 2.0)).eval()     # head g: LayerNorm -> Linear
    x = torch.randn(3, 1, 58, 128)
    out = explain(model, x)
    assert out['rollout'].shape == (3, 12, 5) and out['rollout_px'].shape == (3, 58, 128)
    assert out['saliency'].shape == (3, 58, 128) and (out['saliency'] > 0).any()
    with torch.no_grad(): ref = model.head(m(model.scale(x)))
    assert torch.allclose(out['logits'], ref, atol=1e-5) and torch.equal(out['pred'], ref.argmax(1))
    pred = pd.DataFrame({'row': range(6), 'label': [0, 0, 1, 1, 2, 2], 'pred': [0, 1, 1, 1, 0, 3]})
    pred['correct'] = pred['label'] == pred['pred']
    ex = pick_examples(pred)
    assert sorted(zip(ex['label'], ex['outcome'])) == [(0, 'correct'), (0, 'wrong'), (1, 'correct'), (2, 'wrong')]
    assert all(pred.set_index('row').loc[r, 'correct'] == (o == 'correct') for r, o in zip(ex['row'], ex['outcome']))


DX = ('healthy', 'chronic', 'non-chronic')


@pytest.fixture(scope='module')
def dx_run(tmp_path_factory):
    "best.pt of a tiny run of the diagnosis task (3 classes), trained with a private PATCHMIX_HOME (kept for the tests)."
    root = tmp_path_factory.mktemp('dx')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('PATCHMIX_HOME', str(root / 'home'))
        train(make_config('smoke', class_split='diagnosis', out_dir=str(root / 'run'), progress=False), log=None)
        yield root / 'run' / 'best.pt'


def test_diagnosis_run_embeddings_and_predictions_name_its_classes(dx_run):
    cfg, model = load_run(dx_run)
    assert Task.of(cfg).names == DX and model.n_cls == 3
    emb, frame = extract_embeddings(dx_run, split='all')              # the run's own data, its task: no n_cls error
    data = run_data(cfg)
    assert data.task.names == DX and emb.shape[0] == len(frame) == len(data.split)
    np.testing.assert_array_equal(frame['label'].to_numpy(), data.labels)
    assert list(frame['class_name']) == [DX[i] for i in data.labels] and 'chronic' in set(frame['class_name'])

    rows = data.rows('test')
    pred = predict_rows((cfg, model), data, rows)
    np.testing.assert_array_equal(pred['label'].to_numpy(), data.labels[rows])
    assert list(pred['true_name']) == [DX[i] for i in data.labels[rows]]
    assert list(pred['pred_name']) == [DX[i] for i in pred['pred']] and set(pred['pred_name']) <= set(DX)
    metrics = json.loads((dx_run.parent / 'metrics.json').read_text())
    assert 100 * pred['correct'].mean() == pytest.approx(metrics['test']['acc'])   # the run's own figure

    ex = pick_examples(pred)
    assert len(ex) and set(ex['true_name']) <= set(DX)
    titles = ' '.join(a.get_title() for a in plot_examples(model, data, ex).axes)
    assert 'chronic' in titles and not {'normal', 'crackle', 'wheeze'} & set(titles.replace(':', ' ').split())
    browser = HearsBrowser(model, data, pred)
    assert [n for n, _ in browser.cls.options] == ['all', *DX]
    assert all(' → ' in label and label.split(': ', 1)[1].split(' → ')[0] in DX for label, _ in browser.cycle.options)

    lung = load_data(replace(cfg, class_split='lungsound', n_cls=4))   # the same cycles, labelled by lung sound
    with pytest.raises(ValueError, match='predicts 3 classes'):
        predict_rows(model, lung, lung.rows('test'))


def test_error_table_counts_and_orders_by_hand(tmp_path):
    # 22_hears' batch view: errors per recording and per patient, most errors first, then the most confident
    from types import SimpleNamespace
    from patchmix_nb.hears import domain_note, error_table
    from patchmix_nb.synthetic import MARKER
    cyc = pd.DataFrame({'stem': ['a', 'a', 'a', 'b', 'b', 'c'], 'patient': [1, 1, 1, 2, 2, 2],
                        'device': ['D1', 'D1', 'D1', 'D2', 'D2', 'D3']})
    data = SimpleNamespace(frame=lambda rows: cyc.iloc[np.asarray(rows)].reset_index(drop=True), data_dir=tmp_path)
    pred = pd.DataFrame({'row': range(6), 'stem': cyc.stem, 'correct': [False, False, True, False, True, True],
                         'p': [.9, .6, .8, .7, .5, .99],
                         'true_name': ['crackle', 'wheeze', 'normal', 'crackle', 'normal', 'normal'],
                         'pred_name': ['normal', 'normal', 'normal', 'wheeze', 'normal', 'normal']})
    t = error_table(pred, data, 'stem')
    assert t.index.tolist() == ['a', 'b', 'c']
    assert t.cycles.tolist() == [3, 2, 1] and t.errors.tolist() == [2, 1, 0]
    assert t.error_rate.tolist() == [0.667, 0.5, 0.0] and t.p_wrong.tolist()[:2] == [0.75, 0.7]
    assert t.p_wrong_max.tolist()[:2] == [0.9, 0.7] and np.isnan(t.p_wrong['c'])
    assert t.most_common_error['b'] == 'crackle → wheeze' and t.devices.tolist() == ['D1', 'D2', 'D3']
    by_patient = error_table(pred, data, 'patient')
    assert by_patient.errors.to_dict() == {1: 2, 2: 1} and by_patient.devices[2] == 'D2, D3'
    tie = pred.assign(correct=[False, True, True, False, True, True])                # one error each: surer first
    assert error_table(tie, data).index.tolist()[:2] == ['a', 'b']
    assert error_table(tie.assign(p=[.6, .8, .8, .9, .5, .99]), data).index.tolist()[:2] == ['b', 'a']
    with pytest.raises(ValueError, match="by must be 'stem' or 'patient'"): error_table(pred, data, 'device')
    # the domain shift is named when a synthetic-trained run is shown other recordings, and only then
    syn = tmp_path / 'syn'
    syn.mkdir()
    (syn / MARKER).write_text('{}')
    assert domain_note(make_config('smoke'), data).startswith('domain shift: this model was trained on the synthetic')
    assert domain_note(make_config('smoke'), SimpleNamespace(data_dir=syn)) is None
    assert domain_note(make_config('smoke', data_dir=str(tmp_path)), data) is None          # trained on these
    assert domain_note(None, data) is None
