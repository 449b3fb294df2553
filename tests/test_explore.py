"Tests of the exploration helpers (patchmix_nb.explore) and of nbs/07_explore.ipynb run by papermill on the real sample."
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from matplotlib.colors import to_rgb
from patchmix_nb.icbhi import CLASSES, LOCATIONS, MODES
from patchmix_nb.dataset import load_index
from patchmix_nb.synthetic import make_synthetic
from patchmix_nb.audio import mel_bin_of_hz
from patchmix_nb.explore import (CLASS_COLORS, duration_extremes, pick_class_examples, plot_class_examples,
                                 plot_device_balance, plot_duration_histogram, plot_sample_rates, recording_browser,
                                 recording_view, sample_rate_table, load_recording_data, class_example_audio, view_of)
from patchmix_nb import sprsound as spr

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
    assert len(fig.axes) == 2 * len(CLASSES) + 1  # + the colorbar
    assert fig.axes[-1].get_ylabel() == 'log-mel (normalised)'
    drawn = [ax for ax in fig.axes[:-1] if ax.images]
    assert len(drawn) == len(present)
    assert all(ax.images[0].get_array().shape == (128, 798) for ax in drawn)  # (mel, frames) of an 8 s clip
    for ax, r in zip(drawn, ex.itertuples()):  # seconds on x, Hz on y, the padding shaded from the cycle's end on
        assert ax.get_xlim() == (0, 8) and ax.images[0].get_extent()[:2] == pytest.approx([0, 7.98])
        pad, = [p for p in ax.patches if p.get_gid() == 'padding']
        assert pad.get_x() == pytest.approx(r.duration)
    html = class_example_audio(index, ex).data
    assert html.count('<audio') == len(ex) == html.count('data:audio/wav;base64,')


def test_recording_view(index):
    rec = index.recordings
    stem = rec.sort_values('n_cycles').stem.iloc[-1]
    cyc = index.cycles[index.cycles.stem == stem].sort_values('start')
    fig, audio = recording_view(index, stem)
    wave_ax, spec_ax = fig.axes[:2]
    xs = sorted(l.get_xdata()[0] for l in wave_ax.lines if l.get_gid() == 'boundary')
    np.testing.assert_allclose(xs, sorted([*cyc.start, *cyc.end]))
    spans = [p for p in wave_ax.patches if p.get_gid() == 'cycle']
    assert len(spans) == len(cyc)
    assert [p.get_facecolor()[:3] for p in spans] == [pytest.approx(to_rgb(CLASS_COLORS[y])) for y in cyc.label]
    labels = [t.get_text() for t in wave_ax.texts if t.get_gid() == 'cycle-label']
    assert [l.split('\n')[0] for l in labels] == [str(n) for n in range(1, len(cyc) + 1)]  # numbered in time order
    legend = [t.get_text().split(' (')[0] for t in wave_ax.get_legend().get_texts()]
    assert legend == [CLASSES[k] for k in sorted(set(cyc.label))]  # present classes only
    r = rec.set_index('stem').loc[stem]
    title = wave_ax.get_title(loc='left')
    for part in (f'patient {r.patient}', f'({r.diagnosis})', LOCATIONS[r['location']], MODES[r['mode']], r.device,
                 f'{r.sample_rate / 1000:g} kHz → 16 kHz'):
        assert part in title, (part, title)
    assert spec_ax.get_ylabel() == 'frequency (Hz)' and spec_ax.images
    assert fig.axes[2].get_ylabel() == 'log-mel (normalised)'  # the colorbar
    assert fig.get_size_inches() * fig.dpi == pytest.approx((1100, 480))  # recording_view's default width  # laid out at display size
    assert audio.data[:4] == b'RIFF' and int.from_bytes(audio.data[24:28], 'little') == 16000  # wav at 16 kHz
    with pytest.raises(KeyError, match='nope'): recording_view(index, 'nope')
    # one cycle: zoomed, and its audio is the cycle alone
    fig3, audio3 = recording_view(index, stem, cycle=3)
    c = cyc.iloc[2]
    lo, hi = fig3.axes[0].get_xlim()
    assert lo <= c.start and c.end <= hi and hi - lo < 0.5 * r.duration
    assert (len(audio3.data) - 44) // 2 == int(c.end * 16000) - int(c.start * 16000)
    with pytest.raises(IndexError, match=f'cycles 1..{len(cyc)}'): recording_view(index, stem, cycle=len(cyc) + 1)
    # the zoomed waveform's y range fits the samples in view (a louder part elsewhere does not flatten it)
    x = load_recording_data(index, stem).wave
    seen = np.abs(x[int(lo * 16000):int(np.ceil(hi * 16000)) + 1]).max()
    ylo, yhi = fig3.axes[0].get_ylim()
    assert ylo == pytest.approx(-1.2 * seen, rel=1e-3) and yhi == pytest.approx(1.35 * seen, rel=1e-3)
    line = fig3.axes[0].lines[0]  # the (envelope of the) waveform
    assert np.abs(line.get_ydata()).max() == pytest.approx(seen, rel=1e-6)


def test_mel_hz_axis():
    import torchaudio
    _, centres = torchaudio.compliance.kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    np.testing.assert_allclose(mel_bin_of_hz(centres.numpy().ravel()), np.arange(128) + 0.5, atol=1e-3)


def test_browser(index):
    rec = index.recordings
    b = recording_browser(index, width=800)
    assert b.stem == rec.stem.iloc[0] and b.dropdown.value == b.stem and len(b.dropdown.options) == len(rec)
    assert b.image.value[:4] == b'\x89PNG' and b.player.value[:4] == b'RIFF' and b.cycle_player.value == b''
    w, h = int.from_bytes(b.image.value[16:20], 'big'), int.from_bytes(b.image.value[20:24], 'big')
    assert (w, h) == (1600, 960) and b.image.layout.width == '800px'  # 2x pixels, shown at its width
    assert b.status.value.count('drawn in') == 1
    # filters narrow the list, to exactly the recordings that match
    split = b.filter(split='test')
    assert split == list(rec.stem[rec.split == 'test']) and 0 < len(split) < len(rec)
    assert [v for _, v in b.dropdown.options] == split and b.stem == split[0] and b.prev_button.disabled
    both = b.filter(label=3)  # 'both' present, still in the test split
    want = [s for s in split if (index.cycles.label[index.cycles.stem == s] == 3).any()]
    assert both == want and len(both) < len(split)
    b.filter(label=None)
    labels = index.cycles.groupby('stem').label.agg(set)
    def present(k, device=None):  # does some test recording (on this device) hold class k?
        on = (rec.split == 'test') & ((rec.device == device) if device else True)
        return any(k in labels[s] for s in rec.stem[on])
    # a class the test split holds, but not on some device (sorted: a set's order changes between processes)
    empty = [(d, k) for d in sorted(set(rec.device)) for k in range(4) if present(k) and not present(k, d)]
    assert empty  # the tiny set lacks some class on some device
    assert b.filter(device=empty[0][0], label=empty[0][1]) == [] and 'no recording matches' in b.status.value
    assert b.filter(device=None, label=None) == split
    # relaxing a filter: the status shows the recording drawn again, not the stale 'no recording matches'
    drawn = b.status.value
    assert '✔' in drawn and b.filter(label=empty[0][1]) and b.filter(device=empty[0][0]) == []
    assert 'no recording matches' in b.status.value and b.count.value.startswith('– of 0')
    relaxed = b.filter(device=None)
    assert relaxed and b.stem in relaxed and 'no recording matches' not in b.status.value and '✔' in b.status.value
    assert b.count.value == f'{relaxed.index(b.stem) + 1} of {len(relaxed)} (of {len(rec)})'
    b.w_filters['device'].value = empty[0][0]  # the same through the widgets
    assert 'no recording matches' in b.status.value
    b.w_filters['device'].value = '(all)'
    assert 'no recording matches' not in b.status.value and '✔' in b.status.value
    assert b.filter(label=None) == split
    with pytest.raises(TypeError, match='unknown filter'): b.filter(colour='red')
    b.w_filters['split'].value = 'train'  # the filter widgets call filter()
    assert b.stems == list(rec.stem[rec.split == 'train']) and b.filters['split'] == 'train'
    b.w_filters['split'].value = '(all)'
    assert b.filters['split'] is None and len(b.stems) == len(rec)
    b.filter(split='test')
    with pytest.raises(ValueError, match="device='nope' is not in this data"): b.filter(device='nope')
    # previous / next move through the filtered list and stop at its ends
    f1 = b.next()
    assert b.stem == split[1] and split[1] in f1.axes[0].get_title(loc='left') and not b.prev_button.disabled
    b.prev(); b.prev()
    assert b.stem == split[0]
    for _ in split: b.next()
    assert b.stem == split[-1] and b.next_button.disabled
    # the title holds the diagnosis; the widget controls call the same methods
    b.dropdown.value = split[0]
    r = rec.set_index('stem').loc[split[0]]
    assert b.stem == split[0] and f'patient {r.patient} ({r.diagnosis})' in b.figure.axes[0].get_title(loc='left')
    whole = b.figure.axes[0].get_xlim()
    # zoom on a cycle: xlim narrows to it, the cycle player holds it alone, the recording player keeps the whole
    player = b.player.value
    b.cycle_dropdown.value = 2
    c = b.data.cycle(2)
    lo, hi = b.figure.axes[0].get_xlim()
    assert (lo, hi) != whole and lo <= c.start and c.end <= hi
    assert (len(b.cycle_player.value) - 44) // 2 == len(b.data.cycle_samples(2)) == int(c.end * 16000) - int(c.start * 16000)
    assert b.cycle_audio(2) == b.cycle_player.value and b.player.value == player
    b.cycle_dropdown.value = 0  # 'whole recording'
    assert b.figure.axes[0].get_xlim() == pytest.approx(whole) and b.cycle_player.value == b''
    b.next_button.click()
    assert b.stem == split[1] and b.cycle is None and b.cycle_dropdown.value == 0


@pytest.fixture(scope='module')
def spr_index(tmp_path_factory):
    return spr.load_index(spr.make_synthetic_sprsound(tmp_path_factory.mktemp('spr')/'set', recordings=8, seed=0))


def test_browser_sprsound(spr_index):
    rec, ev = spr_index.recordings, spr_index.events
    view, recs, items = view_of(spr_index)
    assert view.item == 'event' and view.classes == spr.EVENT_LABELS and items is ev
    with pytest.raises(TypeError, match='expected an ICBHI or an SPRSound index'): view_of(rec)
    b = recording_browser(spr_index, width=800)
    assert b.FILTERS == ('split', 'location', 'record', 'label') and b.stems == list(rec.stem)
    assert [o for _, o in b.w_filters['split'].options[1:]] == sorted(set(rec.split))
    assert [n for n, _ in b.w_filters['label'].options[1:]] == list(spr.EVENT_LABELS)
    r0 = rec.iloc[0]
    assert b.dropdown.options[0][0] == f'{r0.stem}  ({r0.record}, {r0.split}, {r0.n_events} events)'
    # the title names the patient's age and gender, the location and the record label
    title = b.figure.axes[0].get_title(loc='left')
    for part in (f'patient {r0.patient} ({r0.age:g} y', spr.LOCATIONS[r0.location], f'record {r0.record}', '8 kHz → 16 kHz'):
        assert part in title, (part, title)
    # filters: by record label, by split, by an event class present
    assert b.filter(record='DAS') == list(rec.stem[rec.record == 'DAS'])
    assert b.filter(record=None, split='inter-test') == list(rec.stem[rec.split == 'inter-test'])
    fine = spr.EVENT_LABELS.index('Fine Crackle')
    want = [s for s in rec.stem[rec.split == 'inter-test'] if (ev.type[ev.stem == s] == 'Fine Crackle').any()]
    assert b.filter(label=fine) == want and want
    assert b.filter(split=None, label=None) == list(rec.stem)
    with pytest.raises(ValueError, match="record='Wheeze' is not in this data"): b.filter(record='Wheeze')
    with pytest.raises(TypeError, match='unknown filter'): b.filter(device='Meditron')
    # one event per option, numbered from 1 in time order; zooming plays the event alone
    stem = rec.stem[rec.n_events > 0].iloc[0]
    b.select(stem)
    e = ev[ev.stem == stem].sort_values('start')
    assert [v for _, v in b.cycle_dropdown.options] == list(range(len(e) + 1))
    assert b.cycle_dropdown.options[1][0].startswith(f'1: {e.type.iloc[0]}, {e.start.iloc[0]:.2f}')
    b.cycle_dropdown.value = 2
    lo, hi = b.figure.axes[0].get_xlim()
    assert lo <= e.start.iloc[1] and e.end.iloc[1] <= hi and 'event 2: ' in b.figure.axes[0].get_title(loc='left')
    assert (len(b.cycle_player.value) - 44) // 2 == int(e.end.iloc[1] * 16000) - int(e.start.iloc[1] * 16000)
    labels = [t.get_text().split('\n')[0] for t in b.figure.axes[0].texts if t.get_gid() == 'cycle-label']
    assert labels and all(int(x) in range(1, len(e) + 1) for x in labels)
    with pytest.raises(IndexError, match=f'events 1..{len(e)}'): b.zoom(len(e) + 1)
    # a 'Poor Quality' record has no events: the whole recording only, a legend that says so
    pq = rec.stem[rec.n_events == 0].iloc[0]
    b.select(pq)
    assert b.cycle_dropdown.options == (('whole recording', 0),) and b.figure.axes[0].get_legend().get_title().get_text() == 'no events'
    # a run's EventIndex (its events as the items) is read the same way
    from patchmix_nb.data import EventIndex
    assert recording_browser(EventIndex(spr_index), audio=False).stems == list(rec.stem)


@pytest.mark.skipif(not (ICBHI/'sample').is_dir(), reason='real ICBHI sample not available')
def test_notebook_on_real_sample(tmp_path):
    papermill = pytest.importorskip('papermill')
    out = tmp_path/'07_explore.ipynb'
    nb = papermill.execute_notebook(str(NBS/'07_explore.ipynb'), str(out), parameters={'data_dir': str(ICBHI/'sample')},
                                    kernel_name='python3', cwd=str(NBS), progress_bar=False, execution_timeout=300)
    text = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert '10 recordings' in text and '97 cycles' in text
    pngs = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert pngs >= 6
