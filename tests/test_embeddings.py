"Embedding extraction, t-SNE and the k-NN companion metric (patchmix_nb.embeddings)."
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from patchmix_nb.config import make_config
from patchmix_nb.data import load_data, n_frames_for
from patchmix_nb.embeddings import (chance_accuracy, compare_runs, extract_embeddings, knn_accuracy, plot_embeddings,
                                    split_rows, tsne, tsne_perplexity)
from patchmix_nb.model import build_model
from patchmix_nb.runs import model_state, save_checkpoint

DUR = 2.0   # short clips: 198 frames, cheap forward passes


@pytest.fixture(scope='module')
def data():
    return load_data(make_config('cpu-demo', duration=DUR, method='ce', synthetic_recordings=48))


def _checkpoint(path, method, duration=DUR, seed=0):
    "A run checkpoint as `train` writes it, from a randomly initialised model (no training needed)."
    cfg = make_config('cpu-demo', duration=duration, method=method, synthetic_recordings=48, precision='fp32')
    torch.manual_seed(seed)
    model = build_model(cfg, n_frames_for(duration), 'cpu')
    save_checkpoint({**model_state(model), 'config': cfg.to_dict(), 'epoch': 1}, path)
    return path


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp('runs')
    return {'ce': _checkpoint(d / 'ce.pt', 'ce'), 'cl': _checkpoint(d / 'cl.pt', 'patchmix_cl', seed=1)}


def test_embeddings_aligned_with_cache_rows(data, ckpts):
    rows = data.rows('test')
    emb, frame = extract_embeddings(ckpts['ce'], data, 'test', batch_size=16)
    assert emb.dtype == np.float32 and emb.shape[0] == len(rows) and emb.shape[1] > 0
    assert np.isfinite(emb).all()
    np.testing.assert_array_equal(frame['row'].to_numpy(), rows)
    cyc = data.cache.cycles.iloc[rows]
    np.testing.assert_array_equal(frame['stem'].to_numpy(), cyc['stem'].to_numpy())
    np.testing.assert_array_equal(frame['device'].to_numpy(), cyc['device'].to_numpy())
    np.testing.assert_array_equal(frame['label'].to_numpy(), data.labels[rows])
    assert set(frame['split']) == {'test'}
    # row i of the embedding is the backbone feature of cache row frame.row[i]
    from patchmix_nb.inference import load_run
    _, model = load_run(ckpts['ce'])
    pick = [0, len(rows) // 2, len(rows) - 1]
    x = torch.from_numpy(np.array(data.cache.features[rows[pick]], dtype=np.float32))[:, None]   # (3, 1, T, 128)
    with torch.no_grad(): ref = model.backbone(x).numpy()
    np.testing.assert_allclose(emb[pick], ref, rtol=1e-4, atol=1e-5)


def test_explicit_rows_keep_their_order(data, ckpts):
    rows = np.array([7, 2, 30, 2])
    emb, frame = extract_embeddings(ckpts['ce'], data, rows)
    np.testing.assert_array_equal(frame['row'].to_numpy(), rows)
    np.testing.assert_allclose(emb[1], emb[3], rtol=1e-5, atol=1e-6)   # the same cycle twice, the same embedding
    with pytest.raises(ValueError, match='row indices'):
        extract_embeddings(ckpts['ce'], data, [len(data.split)])
    with pytest.raises(ValueError, match="split must be"):
        split_rows(data, 'dev')


def test_projector_only_for_patchmix_cl(data, ckpts):
    with pytest.raises(ValueError, match='need a patchmix_cl run'):
        extract_embeddings(ckpts['ce'], data, which='projector')
    rows = data.rows('val')
    proj, frame = extract_embeddings(ckpts['cl'], data, 'val', which='projector')
    back, _ = extract_embeddings(ckpts['cl'], data, 'val')
    assert proj.shape[0] == back.shape[0] == len(rows) == len(frame)
    assert not np.allclose(proj[:, :min(proj.shape[1], back.shape[1])], back[:, :min(proj.shape[1], back.shape[1])])
    with pytest.raises(ValueError, match="which must be"):
        extract_embeddings(ckpts['cl'], data, which='head')


def test_clip_length_mismatch_is_refused(data, tmp_path):
    ck = _checkpoint(tmp_path / 'long.pt', 'ce', duration=4.0)
    with pytest.raises(ValueError, match='frames'):
        extract_embeddings(ck, data)


def test_tsne_deterministic_given_seed():
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    a, b = tsne(x, seed=3, max_iter=250), tsne(x, seed=3, max_iter=250)
    assert a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)
    assert tsne_perplexity(40) == 13.0 and tsne_perplexity(1000) == 30.0
    with pytest.raises(ValueError, match='perplexity'):
        tsne(x, perplexity=40)


def test_knn_separable_is_one_and_shuffled_is_chance():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    x = 10 * np.eye(8)[y] + rng.normal(size=(400, 8))             # four well separated clusters
    assert knn_accuracy(x, y) == 1.0
    assert knn_accuracy(x, y, metric='euclidean') == 1.0
    assert chance_accuracy(y) == pytest.approx(0.25)
    accs = [knn_accuracy(x, rng.permutation(y)) for _ in range(5)]
    assert abs(np.mean(accs) - 0.25) < 0.06
    with pytest.raises(ValueError, match='k must'):
        knn_accuracy(x, y, k=400)


def test_knn_tie_goes_to_nearest_class():
    x, y = np.array([[0.0], [1.0], [-2.0]]), np.array([2, 2, 1])
    # k=2: points 0 and 1 see one neighbour of each class, the nearer one is class 2 (right);
    # point 2 sees two class-2 neighbours (wrong). A lowest-index tie rule would give 0/3.
    assert knn_accuracy(x, y, k=2, metric='euclidean') == pytest.approx(2 / 3)


def test_compare_runs_figure(data, ckpts):
    fig = compare_runs({'CE': ckpts['ce'], 'CL': ckpts['cl']}, data, split='val', k=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert list(fig.scores.index) == ['CE', 'CL']
    assert fig.scores[['knn_class', 'knn_device']].apply(lambda c: c.between(0, 1)).all().all()
    f2 = plot_embeddings(np.zeros((3, 2)), data.cache.cycles.iloc[:3].assign(**{'class': 'normal'}), by='device')
    assert isinstance(f2, Figure)
    with pytest.raises(ValueError, match='by must be'):
        plot_embeddings(np.zeros((3, 2)), data.cache.cycles.iloc[:3], by='patient')


def test_diagnosis_task_labels_the_frame_and_a_model_in_memory():
    "A 3-class diagnosis model, passed as a model or a (cfg, model) pair: the frame names the task's classes."
    names = ('healthy', 'chronic', 'non-chronic')
    cfg = make_config('cpu-demo', duration=DUR, method='ce', synthetic_recordings=48, class_split='diagnosis',
                      precision='fp32')
    dx = load_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, n_frames_for(DUR), 'cpu')
    assert model.n_cls == 3 and dx.task.names == names
    emb, frame = extract_embeddings(model, dx, 'val')
    emb2, frame2 = extract_embeddings((cfg, model), None, 'val')       # the pair's config finds the data
    np.testing.assert_allclose(emb, emb2, rtol=1e-5, atol=1e-6)
    rows = dx.rows('val')
    np.testing.assert_array_equal(frame['row'].to_numpy(), rows)
    assert list(frame['class_name']) == [names[i] for i in dx.labels[rows]] == list(frame2['class_name'])
    fig = plot_embeddings(np.zeros((len(frame), 2)), frame)               # legend: the task's classes
    legend = {t.get_text().rsplit(' (', 1)[0] for t in fig.axes[0].get_legend().get_texts()}
    assert legend and legend <= set(names)
    assert set(frame['diagnosis']) <= {'COPD', 'Healthy', 'URTI', 'Bronchiectasis', 'Bronchiolitis', 'Pneumonia',
                                       'LRTI', 'Asthma'}
    fig = plot_embeddings(np.zeros((len(frame), 2)), frame, by='diagnosis')
    with pytest.raises(ValueError, match='without its config'):
        extract_embeddings(model)                                          # a bare model needs its data
