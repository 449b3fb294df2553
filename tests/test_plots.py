"Tests of the exploration helpers (patchmix_nb.plots) and of nbs/04_explore.ipynb run by papermill on the real sample."
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from patchmix_nb.icbhi import CLASSES, CLASS_COLORS, load_index
from patchmix_nb.synthetic import make_synthetic
from patchmix_nb.plots import (duration_extremes, pick_class_examples, plot_class_examples, plot_device_balance,
                               plot_duration_histogram, plot_sample_rates, recording_browser, recording_view,
                               sample_rate_table)

ICBHI = Path(os.environ.get('PATCHMIX_ICBHI') or Path(__file__).resolve().parents[2]/'shared'/'icbhi')
NBS = Path(__file__).resolve().parents[1]/'nbs'


@pytest.fixture(scope='module')
def index(tmp_path_factory):
    return load_index(make_synthetic(tmp_path_factory.mktemp('syn')/'set', recordings=6, seed=0))


def test_device_balance(index):
    cyc = index.cycles
    fig = plot_device_balance(cyc)
    assert isinstance(fig, Figure)
    splits, devices = sorted(set(cyc.split)), sorted(set(cyc.device))
    assert len(fig.axes) == len(splits)
    for ax in fig.axes:
        assert len(ax.containers) == len(CLASSES)  # one stacked layer per class
        assert all(len(c) == len(devices) for c in ax.containers)  # one bar per device
    # stacked heights add up to the cycles of each split
    total = sum(p.get_height() for ax in fig.axes for c in ax.containers for p in c)
    assert total == len(cyc)
    frac = plot_device_balance(cyc, normalize=True)
    tops = [sum(c[i].get_height() for c in ax.containers) for ax in frac.axes for i in range(len(devices))]
    assert all(t == 0 or abs(t - 1) < 1e-9 for t in tops)


def test_duration_histogram(index):
    cyc = index.cycles
    fig = plot_duration_histogram(cyc, bins=25)
    assert len(fig.axes) == 2
    hist = fig.axes[0]
    assert len(hist.patches) == 25 * len(CLASSES)
    assert sum(p.get_height() for p in hist.patches) == len(cyc)  # every cycle counted once, in its class layer
    for k, c in enumerate(hist.containers):
        assert sum(p.get_height() for p in c) == int((cyc.label == k).sum())
    assert 8.0 in [l.get_xdata()[0] for l in hist.lines]
    d = cyc.duration.to_numpy()
    assert duration_extremes(cyc) == {'longer': int((d > 8).sum()), 'shorter': int((d < 0.5).sum())}
    assert duration_extremes(cyc, clip=0.0, short=1e9) == {'longer': len(cyc), 'shorter': len(cyc)}


def test_sample_rates(index):
    t = sample_rate_table(index.recordings)
    assert t['total'].sum() == len(index.recordings)
    assert {int(c) for c in t.columns if c != 'total'} == set(index.recordings.sample_rate.astype(int))
    fig = plot_sample_rates(index.recordings)
    ax, = fig.axes
    assert len(ax.containers) == len(t.columns) - 1 and all(len(c) == len(t) for c in ax.containers)


def test_class_examples(index):
    ex = pick_class_examples(index)
    present = sorted(set(index.cycles.label))
    assert ex.label.tolist() == present
    fig = plot_class_examples(index, ex)
    assert len(fig.axes) == 2 * len(CLASSES)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == len(present)
    assert all(ax.images[0].get_array().shape == (128, 798) for ax in drawn)  # (mel, frames) of an 8 s clip


def test_recording_view_and_browser(index):
    rec = index.recordings
    stem = rec.sort_values('n_cycles').stem.iloc[-1]
    cyc = index.cycles[index.cycles.stem == stem]
    fig, audio = recording_view(index, stem)
    wave_ax = fig.axes[0]
    xs = sorted(l.get_xdata()[0] for l in wave_ax.lines if l.get_gid() == 'boundary')
    np.testing.assert_allclose(xs, sorted([*cyc.start, *cyc.end]))
    spans = [p for p in wave_ax.patches if p.get_gid() == 'cycle']
    assert len(spans) == len(cyc)
    assert audio.data[:4] == b'RIFF' and int.from_bytes(audio.data[24:28], 'little') == 16000  # wav at 16 kHz
    with pytest.raises(KeyError, match='nope'): recording_view(index, 'nope')

    b = recording_browser(index)
    assert b.dropdown.value == rec.stem.iloc[0] and len(b.dropdown.options) == len(rec)
    assert b.image.value[:4] == b'\x89PNG' and b.player.value[:4] == b'RIFF'
    b.dropdown.value = stem  # selecting a recording re-renders it
    fig = b.figure
    assert stem in fig.axes[0].get_title()
    xs = sorted(l.get_xdata()[0] for l in fig.axes[0].lines if l.get_gid() == 'boundary')
    np.testing.assert_allclose(xs, sorted([*cyc.start, *cyc.end]))
    colors = [p.get_facecolor()[:3] for p in fig.axes[0].patches if p.get_gid() == 'cycle']
    from matplotlib.colors import to_rgb
    assert colors == [pytest.approx(to_rgb(CLASS_COLORS[y])) for y in cyc.label]
    other = rec.stem.iloc[0]
    f2 = b.render(other)
    n2 = int((index.cycles.stem == other).sum())
    assert sum(l.get_gid() == 'boundary' for l in f2.axes[0].lines) == 2 * n2


@pytest.mark.skipif(not (ICBHI/'sample').is_dir(), reason='real ICBHI sample not available')
def test_notebook_on_real_sample(tmp_path):
    papermill = pytest.importorskip('papermill')
    out = tmp_path/'04_explore.ipynb'
    nb = papermill.execute_notebook(str(NBS/'04_explore.ipynb'), str(out), parameters={'data_dir': str(ICBHI/'sample')},
                                    kernel_name='python3', cwd=str(NBS), progress_bar=False, execution_timeout=300)
    text = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert '10 recordings' in text and '97 cycles' in text
    pngs = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert pngs >= 6
