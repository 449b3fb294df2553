"""Tests for patchmix_nb.metrics: the ICBHI score against a literal copy of the reference loop, selection, breakdowns."""
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from patchmix_nb.metrics import (EPS, PAPER_RESULTS, BestTracker, compare_with_paper, confusion_matrix, icbhi_hits,
                                 icbhi_score, is_better, per_group_scores, plot_confusion, plot_group_scores,
                                 selection_summary)


def reference_score(labels, preds, n_cls=4, two_cls_eval=False):
    """The reference's `validate` loop and `get_score`, written out plainly (raymin0223/patch-mix_contrastive_learning)."""
    hits, counts = [0.0] * n_cls, [0.0] * n_cls
    for idx in range(len(preds)):
        counts[labels[idx]] += 1.0
        if not two_cls_eval:
            if preds[idx] == labels[idx]:
                hits[labels[idx]] += 1.0
        else:
            if labels[idx] == 0 and preds[idx] == labels[idx]:
                hits[labels[idx]] += 1.0
            elif labels[idx] != 0 and preds[idx] > 0:
                hits[labels[idx]] += 1.0
    sp = hits[0] / (counts[0] + 1e-10) * 100
    se = sum(hits[1:]) / (sum(counts[1:]) + 1e-10) * 100
    sc = (sp + se) / 2.0
    return sp, se, sc


@pytest.mark.parametrize("two_cls_eval", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_matches_reference_on_random_predictions(seed, two_cls_eval):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    y = rng.choice(4, size=n, p=[.55, .25, .13, .07]).tolist()
    p = rng.integers(0, 4, size=n).tolist()
    sp, se, sc = reference_score(y, p, 4, two_cls_eval)
    r = icbhi_score(y, p, n_cls=4, two_cls_eval=two_cls_eval)
    assert abs(r['sp'] - sp) < 1e-6 and abs(r['se'] - se) < 1e-6 and abs(r['score'] - sc) < 1e-6


def test_matches_reference_two_class_model():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 2, 500).tolist(), rng.integers(0, 2, 500).tolist()
    r = icbhi_score(y, p, n_cls=2)
    assert np.allclose([r['sp'], r['se'], r['score']], reference_score(y, p, 2), atol=1e-6)


def test_input_types_agree():
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    ref = icbhi_score(y.tolist(), p.tolist())
    for yy, pp in [(y, p), (torch.tensor(y), torch.tensor(p)), (y.astype(np.int32), torch.tensor(p, dtype=torch.int8))]:
        r = icbhi_score(yy, pp)
        assert (r['sp'], r['se'], r['score']) == (ref['sp'], ref['se'], ref['score'])
    logits = torch.nn.functional.one_hot(torch.tensor(p), 4).float() * 3 - 1  # (n, 4) scores whose argmax is p
    assert icbhi_score(torch.tensor(y), logits)['score'] == ref['score']


def test_hand_computed_four_class():
    # 4 normal (3 right), 6 crackle (all right), 2 wheeze (0 right), 2 both (0 right)
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3]
    p = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2]
    r = icbhi_score(y, p)
    assert r['sp'] == pytest.approx(75.0, abs=1e-6)
    assert r['se'] == pytest.approx(60.0, abs=1e-6)       # pooled 6/10, not the mean recall 33.3
    assert r['score'] == pytest.approx(67.5, abs=1e-6)
    assert r['acc'] == pytest.approx(100 * 9 / 14)
    assert r['counts'] == [4, 6, 2, 2] and r['hits'] == [3, 6, 0, 0]
    assert r['recall'][1] == pytest.approx(100.0, abs=1e-6) and r['recall'][2] == 0.0
    # exact guard formula, bit for bit
    assert r['sp'] == 3 / (4 + 1e-10) * 100 and EPS == 1e-10


def test_hand_computed_two_cls_eval():
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3]
    p = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2]
    r = icbhi_score(y, p, two_cls_eval=True)
    assert r['sp'] == pytest.approx(75.0, abs=1e-6)       # Sp unchanged by two_cls_eval
    assert r['se'] == pytest.approx(90.0, abs=1e-6)       # wrong-abnormal predictions count as hits
    assert r['hits'] == [3, 6, 1, 2]
    # a normal cycle predicted abnormal is never a hit in either mode
    assert icbhi_score([0, 0], [2, 3], two_cls_eval=True)['sp'] == 0.0


def test_empty_classes_and_errors():
    assert icbhi_score([1, 2, 3], [1, 2, 0]) ['sp'] == 0.0          # no normal cycles: guarded, no error
    assert icbhi_score([0, 0], [0, 1])['se'] == 0.0                  # no abnormal cycles
    assert icbhi_score([0, 0], [0, 1])['score'] == pytest.approx(25.0)
    with pytest.raises(ValueError, match='0..3'): icbhi_score([0, 5], [0, 0])
    with pytest.raises(ValueError, match='y_pred has 1'): icbhi_score([0, 1], [0])
    with pytest.raises(ValueError, match='integer'): icbhi_score([0, 1], [0.5, 1.0])
    with pytest.raises(ValueError, match='0..1'): icbhi_score([0, 2], [0, 1], n_cls=2)


def test_is_better_rule():
    assert is_better(10.0, None, se=6.0)
    assert not is_better(10.0, None, se=5.0)      # Se must be strictly > 5
    assert not is_better(60.0, 60.0, se=40.0)     # ties do not improve
    assert is_better(60.01, 60.0, se=40.0)
    assert not is_better(0.0, None, se=10.0)      # best starts at 0 like the reference's [0, 0, 0]


def test_best_tracker_semantics():
    bt = BestTracker()
    seq = [dict(sp=100., se=0., score=50.), dict(sp=80., se=30., score=55.), dict(sp=70., se=40., score=55.),
           dict(sp=60., se=4.9, score=70.), dict(sp=75., se=45., score=60.), dict(sp=90., se=20., score=55.)]
    flags = [bt.update(e, s, payload=f'ckpt{e}') for e, s in enumerate(seq, start=1)]
    assert flags == [False, True, False, False, True, False]
    assert bt.best_epoch == 5 and bt.best == dict(sp=75., se=45., score=60.) and bt.payload == 'ckpt5'
    f = bt.frame()
    assert list(f.epoch) == [1, 2, 3, 4, 5, 6] and f.best.sum() == 2


def test_best_tracker_never_passes_gate():
    bt = BestTracker()
    for e in range(1, 6):
        assert bt.update(e, dict(sp=100., se=0., score=50.)) is False
    assert bt.best is None and bt.best_epoch is None and bt.payload is None
    s = selection_summary([dict(sp=100., se=0., score=50.)] * 3, [dict(sp=100., se=0., score=50.)] * 3)
    assert s['epoch'].isna().all() and s['score'].isna().all()


def test_selection_summary_protocols():
    test = [dict(sp=80., se=30., score=55.), dict(sp=75., se=45., score=60.), dict(sp=70., se=40., score=55.)]
    val = [dict(sp=85., se=40., score=62.5), dict(sp=80., se=40., score=60.), dict(sp=85., se=41., score=63.)]
    s = selection_summary(test, val)
    assert s.loc['upstream (best on test)', 'epoch'] == 2 and s.loc['upstream (best on test)', 'score'] == 60.
    assert s.loc['validation-selected', 'epoch'] == 3 and s.loc['validation-selected', 'score'] == 55.
    with pytest.raises(ValueError): selection_summary(test, val[:2])


def test_confusion_matrix_and_plot():
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    cm = confusion_matrix(y, p, 4)
    expected = np.zeros((4, 4), int)
    for a, b in zip(y, p): expected[a, b] += 1
    assert (cm == expected).all()
    r = icbhi_score(y, p)
    assert cm.sum(1).tolist() == r['counts'] and np.diag(cm).tolist() == r['hits']
    for norm in (None, 'true', 'pred', 'all'):
        fig = plot_confusion(cm, normalize=norm)
        assert isinstance(fig, Figure)
    with pytest.raises(ValueError): plot_confusion(cm, normalize='rows')


@pytest.mark.parametrize("two_cls_eval", [False, True])
def test_per_group_scores_sum_to_total(two_cls_eval):
    rng = np.random.default_rng(7)
    n = 600
    y, p = rng.choice(4, n, p=[.5, .3, .15, .05]), rng.integers(0, 4, n)
    dev = np.array(['Meditron', 'LittC2SE', 'Litt3200', 'AKGC417L'])[rng.integers(0, 4, n)]
    df = per_group_scores(y, p, dev, two_cls_eval=two_cls_eval)
    parts, tot = df.drop('all'), df.loc['all']
    for c in ('n', 'n_normal', 'n_abnormal', 'hits_normal', 'hits_abnormal'):
        assert parts[c].sum() == tot[c]
    assert tot['n'] == n
    overall = icbhi_score(y, p, two_cls_eval=two_cls_eval)
    assert tot['score'] == pytest.approx(overall['score'], abs=1e-9)
    for g in parts.index:   # each group row equals the plain score on that subset (reference formula)
        m = dev == g
        sp, se, sc = reference_score(y[m].tolist(), p[m].tolist(), 4, two_cls_eval)
        assert df.loc[g, 'sp'] == pytest.approx(sp, abs=1e-6) and df.loc[g, 'se'] == pytest.approx(se, abs=1e-6)
    assert isinstance(plot_group_scores(df), Figure)
    ordered = per_group_scores(y, p, dev, order=['AKGC417L', 'Meditron'], total=False)
    assert list(ordered.index) == ['AKGC417L', 'Meditron']
    with pytest.raises(ValueError, match='groups'): per_group_scores(y, p, dev[:-1])


def test_paper_results_table():
    assert {'method', 'sp', 'se', 'score', 'status'} <= set(PAPER_RESULTS.columns)
    assert set(PAPER_RESULTS.status) == {'[paper]', '[unverified]'}
    row = PAPER_RESULTS[(PAPER_RESULTS.method == 'Patch-Mix CL') & (PAPER_RESULTS.task == '4-class')].iloc[0]
    assert (row.sp, row.se, row.score, row.status) == (81.66, 43.07, 62.37, '[paper]')
    ft = PAPER_RESULTS[PAPER_RESULTS.method == 'AST fine-tuning (CE)'].iloc[0]
    assert (ft.sp, ft.se, ft.score) == (77.14, 41.97, 59.55)
    assert PAPER_RESULTS[PAPER_RESULTS.task == '2-class'].score.tolist() == [68.71]
    four = PAPER_RESULTS[PAPER_RESULTS.task == '4-class']
    assert np.allclose((four.sp + four.se) / 2, four.score, atol=0.011)
    cmp = compare_with_paper([dict(method='ours', sp=80.0, se=44.0, score=62.0)])
    assert len(cmp) == len(four) + 1 and cmp.iloc[0].method == 'Patch-Mix CL'
    assert cmp[cmp.method == 'ours'].status.item() == '[ours]'
    with pytest.raises(ValueError, match='score'): compare_with_paper(dict(method='x', sp=1, se=2))
