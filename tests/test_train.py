"""Training loop: determinism, resume, selection, checkpoints, pretrained loading (tiny settings, CPU)."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from patchmix_nb.ast import AST, CheckpointError, ast_config
from patchmix_nb import train as T
from patchmix_nb.icbhi import ICBHIError
from patchmix_nb.config import Config, config_hash, make_config
from patchmix_nb.data import Task, load_data, n_frames_for
from patchmix_nb.model import STEPS, build_model
from patchmix_nb.runs import RunFolder, load_checkpoint, summarize
from patchmix_nb.train import MovingAverageUpdate, TrainingDiverged, cosine_lr, make_optimizer, train, train_step
from patchmix_nb.inference import evaluate_run, load_run, predict_recording

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


def test_patch_stride_sets_the_token_grid_and_travels_with_the_run(run_dir):
    out, m = run_dir
    assert m['config']['patch_stride'] == 16                            # the cpu-demo preset tiles its patches
    cfg, model = load_run(out / 'best.pt')
    assert (cfg.patch_stride, model.backbone.grid, model.backbone.stride) == (16, (8, 12), (16, 16))   # 2 s: 96 tokens
    paper_grid = build_model(replace(cfg, patch_stride=10), n_frames_for(2.0), torch.device('cpu')).backbone.grid
    assert paper_grid == (12, 19)                                        # the paper's overlapping patches: 228
    assert Config.from_dict({k: v for k, v in m['config'].items() if k != 'patch_stride'}).patch_stride == 10  # older runs


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
    assert cosine_lr(5e-5, 1, 50) == pytest.approx(4.995e-5, rel=1e-3) and cosine_lr(5e-5, 50, 50) == pytest.approx(5e-8)
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
    for bad, msg in ((dict(temperature=0), 'temperature'), (dict(temperature=-1), 'temperature'), (dict(max_steps=0), 'max_steps'),
                     (dict(duration=0), 'duration must be > 0'), (dict(pos_embed_mode='bogus'), 'pos_embed_mode'),
                     (dict(precision='fp8'), 'precision'), (dict(class_split='diagnosis', n_cls=4), 'n_cls must be one of 2, 3'),
                     (dict(patch_stride=0), 'patch_stride must be 1..16'), (dict(patch_stride=17), 'would skip bins')):
        with pytest.raises(ValueError, match=msg):
            make_config(**bad)
    assert Config.from_dict({'amp': False}).precision == 'fp32'         # configs saved before `precision` still load


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
    with pytest.raises(CheckpointError, match=r'stride \(10, 10\); the model has stride \(16, 16\): use patch_stride=10'):
        train(make_config('cpu-demo', pretrained=str(ck), out_dir=str(tmp_path / 'tiled'), **{**TINY, 'epochs': 1}), log=None)
    m = train(make_config('cpu-demo', pretrained=str(ck), out_dir=str(out), **{**TINY, 'epochs': 1, 'lr': 1e-12, 'patch_stride': 10,
                                                                              'ma_beta': 0.0, 'specaug': 'off'}), log=None)
    w = load_checkpoint(out / 'last.pt')['model']
    torch.testing.assert_close(w['blocks.0.attn.qkv.weight'], src.state_dict()['blocks.0.attn.qkv.weight'],
                               rtol=0, atol=1e-9)                                                   # lr 1e-12: unchanged
    assert w['pos_embed'].shape == (1, 2 + 12 * 19, 192)                                                # 2 s clips
    assert m['epochs_done'] == 1


# ---------------------------------------------------------------- the reference's step order, literally

def _reference_step(model, x, y, opt, beta):
    """A literal transcription of the reference's iteration with --ma_update: deep copies of the state dicts at the
    start of the iteration, forward, loss, backward, step, then every entry blended and loaded back."""
    import copy
    nets = model.nets()
    ma_ckpt = [copy.deepcopy(m.state_dict()) for m in nets]               # at the start of the iteration
    loss, _ = STEPS[model.method](model, x, y)
    opt.zero_grad(); loss.backward(); opt.step()
    for m, old in zip(nets, ma_ckpt):
        new = m.state_dict()
        m.load_state_dict({k: beta * old[k] + (1 - beta) * new[k] for k in new})
    return loss.detach()


def _fixed_parts(method='patchmix_cl', fused=True):
    cfg = make_config('smoke', method=method, precision='fp32', device='cpu', weighted_loss=False, fused_passes=fused)
    torch.manual_seed(0)
    model = build_model(cfg, n_frames_for(cfg.duration), torch.device('cpu'))
    x = torch.randn(8, 1, n_frames_for(cfg.duration), 128, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return cfg, model, x, y


@pytest.mark.parametrize('fused', [False, True])
def test_train_step_equals_the_reference_order(fused):
    """Parameters and every buffer (projector BatchNorm statistics included) after one step equal the reference's order
    (two passes); also with the clean and mixed passes fused into one batch of 2B."""
    import copy
    cfg, a, x, y = _fixed_parts(fused=fused)
    b = copy.deepcopy(a)
    b.fused_passes = False
    for p in (a, b): p.generator.manual_seed(5)                           # the same mixing plan (λ, π, mask)
    opt_a = make_optimizer(a, cfg.lr, cfg.weight_decay)
    opt_b = torch.optim.Adam([q for m in b.nets() for q in m.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_a, _ = train_step(a, x, y, opt_a, MovingAverageUpdate(a.nets(), cfg.ma_beta))
    loss_b = _reference_step(b, x, y, opt_b, cfg.ma_beta)
    assert float(loss_a) == pytest.approx(loss_b.item(), abs=1e-6)
    diffs = []
    for ma_, mb in zip(a.nets(), b.nets()):
        sa, sb = ma_.state_dict(), mb.state_dict()
        for k in sb:
            if not fused:
                torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6, msg=lambda m: f"{k}: {m}")
            diffs.append((sa[k].double() - sb[k].double()).abs().flatten())
    if fused:   # one 2B batch rounds differently; Adam's first step is ±lr whatever a gradient's size, so a rare
        d = torch.cat(diffs)    # near-zero gradient may land a weight a little further off: all but 1 in 10^4 within 1e-6
        assert (d <= 1e-6).double().mean() >= 0.9999 and d.max() <= cfg.lr, ((d > 1e-6).sum(), d.numel(), d.max())
    bn = a.projector.bn
    assert bn.num_batches_tracked.item() == 0                             # truncated back, as in the reference


def test_snapshot_after_backward_would_miss_the_buffers():
    "The defect this fixes: a snapshot taken after the forward pass leaves BatchNorm at momentum 0.1."
    import copy
    cfg, a, x, y = _fixed_parts()
    b = copy.deepcopy(a)
    for p in (a, b): p.generator.manual_seed(5)
    train_step(a, x, y, make_optimizer(a, cfg.lr, cfg.weight_decay), MovingAverageUpdate(a.nets(), cfg.ma_beta))
    opt_b, ma_b = make_optimizer(b, cfg.lr, cfg.weight_decay), MovingAverageUpdate(b.nets(), cfg.ma_beta)
    loss, _ = STEPS[cfg.method](b, x, y); opt_b.zero_grad(); loss.backward()
    ma_b.snapshot(); opt_b.step(); ma_b.blend()                           # the former order
    bn = lambda p: next(m for m in p.projector.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert (bn(a).running_mean - bn(b).running_mean).abs().max() > 1e-3


@pytest.mark.parametrize('method', ['ce', 'patchmix_ce', 'patchmix_cl', 'mixup', 'cutmix'])
def test_every_method_takes_a_step(method):
    "Each method's step runs through train_step: a finite loss, λ logged where there is mixing, and the weights move."
    cfg, p, x, y = _fixed_parts(method)
    before = {k: v.clone() for k, v in p.head.state_dict().items()}
    loss, logs = train_step(p, x, y, make_optimizer(p, cfg.lr, cfg.weight_decay), MovingAverageUpdate(p.nets(), cfg.ma_beta))
    assert torch.isfinite(loss)
    assert ('lam' in logs) == (method != 'ce') and (method != 'ce') <= (0 <= float(logs.get('lam', 0)) <= 1)
    if method == 'patchmix_cl': assert set(logs) == {'ce', 'cl', 'lam'}
    assert any(not torch.equal(before[k], v) for k, v in p.head.state_dict().items())


# ---------------------------------------------------------------- run folders, divergence, interruptions

def test_run_folder_is_never_overwritten(tmp_path):
    cfg = make_config('smoke', out_dir=str(tmp_path / 'r'), progress=False)
    train(cfg, log=None)
    with pytest.raises(FileExistsError, match=r"r: already holds a run \(1 of 1 epochs done\).*--resume.*--overwrite"):
        train(cfg, log=None)
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        train(replace(cfg, out_dir=str(tmp_path / 'empty')), resume=True, log=None)
    m = train(cfg, overwrite=True, log=None)
    assert m['epochs_done'] == 1 and json.loads((tmp_path / 'r' / 'metrics.json').read_text())['config_hash'] == config_hash(cfg)


def test_a_diverged_run_is_an_error_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(T, 'cosine_lr', lambda lr, e, *a: 1e-3 if e == 1 else float('nan'))   # epoch 2 diverges
    cfg = make_config('smoke', epochs=2, max_steps=3, out_dir=str(tmp_path / 'r'), progress=False)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: loss is nan \(ce nan, cl nan, lam"):
        train(cfg, log=None)
    assert load_checkpoint(tmp_path / 'r' / 'last.pt')['epoch'] == 1
    assert json.loads((tmp_path / 'r' / 'metrics.json').read_text())['epochs_done'] == 1


def test_a_mixed_run_folder_is_repaired_from_last_pt(tmp_path):
    "Interrupted between renaming last.pt and metrics.json: the next start rebuilds what last.pt implies."
    import shutil
    cfg = make_config('smoke', epochs=2, max_steps=2, out_dir=str(tmp_path / 'a'), progress=False)
    train(cfg, stop_after=1, log=None)
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    train(cfg, resume=True, log=None)                                      # a: epoch 2 complete
    shutil.copy(tmp_path / 'a' / 'last.pt', tmp_path / 'b' / 'last.pt')   # b: last.pt of epoch 2, the rest of epoch 1
    (tmp_path / 'b' / '.last.pt.999999999.tmp').write_bytes(b'')         # a dead writer's leftover
    fixed = RunFolder(tmp_path / 'b').repair()
    assert any('metrics.json rebuilt' in f for f in fixed) and any('.last.pt.999999999.tmp' in f for f in fixed)
    ma, mb = (json.loads((tmp_path / d / 'metrics.json').read_text()) for d in 'ab')
    assert mb['epochs_done'] == 2 and mb['selected_epoch'] == ma['selected_epoch']
    assert load_checkpoint(tmp_path / 'b' / 'best.pt')['epoch'] == ma['selected_epoch']
    assert not (tmp_path / 'b' / '.last.pt.999999999.tmp').exists()


def test_unreadable_checkpoints_are_one_line(tmp_path, run_dir):
    (tmp_path / 'empty.pt').write_bytes(b'')
    (tmp_path / 'junk.pt').write_bytes(b'not a zip file at all')
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'resnet.pt')
    for name, msg in (('empty.pt', 'empty file'), ('junk.pt', 'not a readable patchmix checkpoint'), ('resnet.pt', "expected keys 'model'")):
        with pytest.raises(ValueError, match=msg) as e:
            evaluate_run(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and '\n' not in str(e.value)
    ck = load_checkpoint(run_dir[0] / 'best.pt'); ck['config']['model'] = 'ast-small'
    torch.save(ck, tmp_path / 'mismatch.pt')
    with pytest.raises(ValueError, match=r"mismatch.pt: the weights do not fit the model"):
        evaluate_run(tmp_path / 'mismatch.pt')


def test_predict_refuses_cycles_past_the_end(tmp_path, run_dir):
    d = load_data(make_config('cpu-demo', duration=2.0, synthetic_recordings=48))
    rec = d.index.recordings.iloc[0]
    txt = tmp_path / Path(rec.txt).name
    txt.write_text(f"0.5\t{rec.duration + 24:.3f}\t0\t0\n")
    with pytest.raises(ICBHIError, match=rf"{txt.name}:1: cycle ends at .* after the end of its audio"):
        predict_recording(run_dir[0] / 'best.pt', rec.wav, txt)


def test_diagnosis_task_labels_each_cycle_by_its_patient(tmp_path):
    cfg = make_config('smoke', class_split='diagnosis', out_dir=str(tmp_path / 'dx'), progress=False)   # n_cls: 3
    d = load_data(cfg)
    diag = d.index.recordings.set_index('stem')['diagnosis']
    from patchmix_nb.icbhi import diagnosis_label
    want = [diagnosis_label(diag[s], 3) for s in d.cache.cycles['stem']]
    assert d.labels.tolist() == want and set(want) >= {0}
    m = train(cfg, log=None)
    assert m['test']['score'] == pytest.approx((m['test']['sp'] + m['test']['se']) / 2)
    assert cfg.n_cls == 3 and Task.of(cfg).names == ('healthy', 'chronic', 'non-chronic')


def test_trained_run_trains_once_while_another_process_waits(tmp_path):
    "Two processes ask for the same run at once: one trains it, the other waits for it; both get the same folder."
    import subprocess, sys
    code = ("import sys; from patchmix_nb.config import make_config; from patchmix_nb.train import trained_run; "
            "print(trained_run(make_config('smoke', epochs=2), sys.argv[1], log=lambda m: print('TRAIN', m)))")
    procs = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    want = tmp_path / f"smoke-{config_hash(make_config('smoke', epochs=2))}"
    assert {o.strip().splitlines()[-1] for o in outs} == {str(want)}
    assert sum(o.count('TRAIN data:') for o in outs) == 1, outs               # trained once
    assert json.loads((want / 'metrics.json').read_text())['epochs_done'] == 2
    assert not (want / '.lock').exists()


def test_a_mask_run_trains_on_the_zero_cache_and_predicts(tmp_path):
    "pad='mask': the zero-padded cache, an AST that leaves the padding out, rebuilt as such from its checkpoint."
    from patchmix_nb.ast import padded_frames
    cfg = make_config('cpu-demo', pad='mask', out_dir=str(tmp_path / 'mask'), **TINY)
    m = train(cfg, log=None)
    assert 0 <= m['test']['score'] <= 100
    data = load_data(cfg)
    assert data.cache.manifest['params']['pad'] == 'zero'
    assert data.cache.path == load_data(replace(cfg, pad='zero')).cache.path        # one cache for zero and mask
    x = torch.tensor(np.asarray(data.cache.features[:64], dtype=np.float32))[:, None]
    assert padded_frames(x).any()                                   # the synthetic set has cycles shorter than 2 s
    _, model = load_run(tmp_path / 'mask' / 'best.pt')
    ast = model.backbone
    assert ast.mask_padding and ast.token_keep(model.scale(x)).sum() < len(x) * ast.num_patches
    rec = data.index.recordings.iloc[0]
    assert len(predict_recording(tmp_path / 'mask' / 'best.pt', rec.wav, rec.txt)) == rec.n_cycles
