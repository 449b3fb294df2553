"Tests of the synthetic ICBHI generator (patchmix_nb.synthetic): layout, formats, determinism, labels, cues, size."
import hashlib, os, re, time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from patchmix_nb.synthetic import (DEFAULT_RECORDINGS, FULL_PATIENTS, FULL_RECORDINGS, MARKER, SYNTH_VERSION,
                                   cycle_cues, default_synthetic_dir, ensure_synthetic, is_synthetic_complete,
                                   make_synthetic, plan_synthetic, render_recording)

ICBHI = Path(os.environ.get('PATCHMIX_ICBHI') or Path(__file__).resolve().parents[2]/'shared'/'icbhi')
DB = 'ICBHI_final_database'
STEM = re.compile(r'^(1\d\d|2[01]\d|22[0-6])_\d[bp]\d_(Tc|Al|Ar|Pl|Pr|Ll|Lr)_(sc|mc)_(Meditron|LittC2SE|Litt3200|AKGC417L)$')
ROW = re.compile(r'^\d+(\.\d+)?\t\d+(\.\d+)?\t[01]\t[01]$')
DISEASES = {'COPD', 'Healthy', 'URTI', 'Bronchiectasis', 'Bronchiolitis', 'Pneumonia', 'LRTI', 'Asthma'}
TARGET_MIX = (.53, .27, .13, .07)  # ICBHI: normal, crackle, wheeze, both


def digest(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(d.rglob('*')) if p.is_file()}


def rows(txt: Path) -> list[list[str]]:
    return [l.split('\t') for l in txt.read_text().splitlines()]


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp('syn') / 'set', recordings=DEFAULT_RECORDINGS, seed=0)


def test_layout_and_metadata(data):
    db = data/DB
    wavs, txts = sorted(p.stem for p in db.glob('*.wav')), sorted(p.stem for p in db.glob('*.txt'))
    assert len(wavs) == DEFAULT_RECORDINGS and wavs == txts
    assert sorted(p.name for p in db.iterdir()) == sorted([f'{s}.wav' for s in wavs] + [f'{s}.txt' for s in wavs])
    assert all(STEM.match(s) for s in wavs), [s for s in wavs if not STEM.match(s)]
    split = (data/'ICBHI_challenge_train_test.txt').read_text()
    assert not split.endswith('\n')  # like the official file
    split = dict(l.split('\t') for l in split.split('\n'))
    assert sorted(split) == wavs and set(split.values()) == {'train', 'test'}
    assert 0.3 <= Counter(split.values())['test'] / len(split) <= 0.55
    diag = dict(l.split('\t') for l in (data/'ICBHI_Challenge_diagnosis.txt').read_text().split('\n'))
    patients = {s.split('_')[0] for s in wavs}
    assert set(diag) == patients and set(diag.values()) <= DISEASES
    folds_txt = (data/'patient_list_foldwise.txt').read_text()
    assert folds_txt.endswith('\n')
    folds = dict(l.split(' ') for l in folds_txt.splitlines())
    assert set(folds) == patients and set(folds.values()) == {'0', '1', '2', '3', '4'}
    # mostly patient-consistent split: at most one patient has recordings in both sets
    by = {p: {split[s] for s in wavs if s.startswith(p + '_')} for p in patients}
    assert sum(len(v) == 2 for v in by.values()) <= 1
    assert (data/MARKER).exists()


def test_annotation_format_and_audio_length(data):
    for txt in sorted((data/DB).glob('*.txt')):
        text = txt.read_text()
        assert text.endswith('\n'), txt
        r = rows(txt)
        assert r and all(ROW.match('\t'.join(x)) for x in r), txt
        s, e = np.array([[float(x[0]), float(x[1])] for x in r]).T
        assert (e - s >= 0.2 - 1e-9).all() and (e - s <= 16.2).all(), txt
        assert (s[1:] == e[:-1]).all(), f'{txt}: cycles are not contiguous'
        info = sf.info(txt.with_suffix('.wav'))
        assert info.channels == 1 and s[0] >= 0 and e[-1] <= info.frames / info.samplerate + 1e-9, txt
        if txt.stem.endswith('Litt3200'): assert s[0] == 0 and e[-1] == info.frames / info.samplerate
        lowrate = info.samplerate < 44100
        for v in (x for row in r for x in row[:2]):  # 5 significant digits (4/10 kHz files) or <= 3 decimals
            assert (len(v.replace('.', '').lstrip('0')) <= 5) if lowrate else (len(v.split('.')[1]) <= 3 if '.' in v else True), (txt, v)


@pytest.mark.skipif(not (ICBHI/'annotations').is_dir(), reason=f'real ICBHI annotations not found at {ICBHI}')
def test_rows_look_like_real_ones(data):
    real = [l for p in sorted((ICBHI/'annotations').glob('*.txt'))[:200] for l in p.read_text().splitlines()]
    assert all(ROW.match(l) for l in real)  # the pattern our rows are checked against is the real one


def test_sample_rates_and_bit_depths(data):
    fmt = Counter((i.samplerate, i.subtype) for i in map(sf.info, sorted((data/DB).glob('*.wav'))))
    assert {sr for sr, _ in fmt} == {4000, 10000, 44100}
    assert {st for sr, st in fmt if sr == 44100} == {'PCM_16', 'PCM_24', 'PCM_32'}
    assert {st for sr, st in fmt if sr < 44100} == {'PCM_16'}
    for p in sorted((data/DB).glob('*.wav')):
        dev, sr = p.stem.split('_')[-1], sf.info(p).samplerate
        if dev in ('AKGC417L', 'LittC2SE'): assert sr == 44100, p
        if dev == 'Litt3200': assert sr == 4000, p
    if (ICBHI/'sample'/DB).is_dir():  # every format of the real sample occurs in the synthetic set
        real = {(i.samplerate, i.subtype) for i in map(sf.info, sorted((ICBHI/'sample'/DB).glob('*.wav')))}
        assert real <= set(fmt), real - set(fmt)


def test_label_mix(data):
    lab = Counter(2 * int(r[3]) + int(r[2]) for t in (data/DB).glob('*.txt') for r in rows(t))
    n = sum(lab.values())
    assert 250 <= n <= 500
    for k, target in enumerate(TARGET_MIX): assert abs(lab[k] / n - target) < 0.10, (k, lab[k] / n)
    full = plan_synthetic(full=True, seed=0).label_counts()
    for k, target in enumerate(TARGET_MIX): assert abs(full[k] / full.sum() - target) < 0.04, (k, full / full.sum())


def test_deterministic_and_order_independent(data, tmp_path):
    again = make_synthetic(tmp_path/'again', recordings=DEFAULT_RECORDINGS, seed=0)
    assert digest(again) == digest(data)
    # 12 recordings in 2 processes (in whatever order) == in one process
    a = make_synthetic(tmp_path/'w1', recordings=12, seed=3, workers=1)
    b = make_synthetic(tmp_path/'w2', recordings=12, seed=3, workers=2)
    assert digest(a) == digest(b)
    other = make_synthetic(tmp_path/'s1', recordings=12, seed=4)
    assert digest(other) != digest(a)
    with pytest.raises(FileExistsError, match='not empty'): make_synthetic(a, recordings=12, seed=3)
    # a recording's audio depends only on (seed, stem), not on its position in the plan
    plan = plan_synthetic(12, seed=3)
    rec = plan.recordings[7]
    sf_x, _ = sf.read(a/DB/f'{rec.stem}.wav', dtype='float32')
    x = render_recording(rec, 3)
    assert np.abs(sf_x - x).max() < 2 ** -14  # equal up to the file's quantisation


def test_loads_with_icbhi_reader(data):
    dataset = pytest.importorskip('patchmix_nb.dataset', reason='patchmix_nb.dataset (nbs/02_dataset.ipynb) not exported yet')
    idx = dataset.load_index(data)
    assert idx.problems == []
    rec, cyc = idx.recordings, idx.cycles
    assert len(rec) == DEFAULT_RECORDINGS and len(cyc) == plan_synthetic(DEFAULT_RECORDINGS, 0).n_cycles
    assert rec.wav.notna().all() and rec.diagnosis.notna().all() and (rec.fold >= 0).all()
    assert set(rec.split) == {'train', 'test'} and set(cyc.label) == {0, 1, 2, 3}
    assert set(rec.device) == {'Meditron', 'LittC2SE', 'Litt3200', 'AKGC417L'}


def test_cues_are_learnable(data):
    "Wheeze cycles carry a strong spectral line, crackle cycles more clicks than normal ones."
    plan = plan_synthetic(DEFAULT_RECORDINGS, 0)
    cues = {k: [] for k in range(4)}
    for r in plan.recordings:
        x, sr = sf.read(data/DB/f'{r.stem}.wav', dtype='float32')
        for j, lab in enumerate(r.labels):
            cues[int(lab)].append(cycle_cues(x[int(r.bounds[j] * sr):int(r.bounds[j + 1] * sr)], sr))
    med = {k: {m: np.median([c[m] for c in v]) for m in ('peak_db', 'transients')} for k, v in cues.items()}
    for k in (2, 3): assert med[k]['peak_db'] > med[0]['peak_db'] + 6, med
    assert med[1]['peak_db'] < med[0]['peak_db'] + 3, med
    assert med[1]['transients'] > med[0]['transients'] + 1, med
    assert med[3]['transients'] > med[2]['transients'], med
    # per cycle: a threshold on peak_db separates wheezy (2, 3) from non-wheezy (0, 1) cycles well
    y = np.array([k >= 2 for k in range(4) for _ in cues[k]])
    p = np.array([c['peak_db'] for k in range(4) for c in cues[k]])
    assert ((p > 24) == y).mean() > 0.85


def test_full_plan_counts():
    plan = plan_synthetic(full=True, seed=0)
    assert len(plan.recordings) == FULL_RECORDINGS and len(plan.patients) == FULL_PATIENTS
    assert plan.patients == list(range(101, 227))
    assert 6400 <= plan.n_cycles <= 7400, plan.n_cycles
    assert len({r.stem for r in plan.recordings}) == FULL_RECORDINGS
    dev = Counter(r.device for r in plan.recordings)
    assert dev['AKGC417L'] > 500 and 80 < dev['Meditron'] < 180 and dev['Litt3200'] >= 30 and dev['LittC2SE'] >= 40
    sr = Counter(r.sr for r in plan.recordings)
    assert sr[44100] > 750 and sr[4000] > 40 and sr[10000] >= 1
    d = np.concatenate([np.diff(r.bounds) for r in plan.recordings])
    assert 2.3 <= np.median(d) <= 2.8 and 1 <= (d > 8).sum() <= 40 and d.min() >= 0.2 - 1e-9
    test = sum(r.split == 'test' for r in plan.recordings) / FULL_RECORDINGS
    assert 0.35 <= test <= 0.45
    both = {r.patient for r in plan.recordings if r.split == 'test'} & {r.patient for r in plan.recordings if r.split == 'train'}
    assert len(both) == 2
    assert sorted(Counter(plan.folds.values()).values()) == [25, 25, 25, 25, 26]


@pytest.mark.skipif(not os.environ.get('PATCHMIX_SLOW'), reason='slow (~30 s, 2 GB): set PATCHMIX_SLOW=1 to write the full-size set')
def test_full_generation(tmp_path):
    t0 = time.perf_counter()
    out = make_synthetic(tmp_path/'full', full=True)
    print(f'full synthetic set written in {time.perf_counter() - t0:.1f} s')
    wavs = sorted((out/DB).glob('*.wav'))
    assert len(wavs) == FULL_RECORDINGS
    n = sum(len(rows(p.with_suffix('.txt'))) for p in wavs)
    assert n == plan_synthetic(full=True).n_cycles and 6400 <= n <= 7400
    assert len({p.stem.split('_')[0] for p in wavs}) == FULL_PATIENTS


def test_ensure_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv('PATCHMIX_HOME', str(tmp_path/'home'))
    assert default_synthetic_dir() == tmp_path/'home'/f'synthetic-r{DEFAULT_RECORDINGS}-s0-v{SYNTH_VERSION}'
    p = ensure_synthetic(recordings=6, seed=1)
    assert p == tmp_path/'home'/f'synthetic-r6-s1-v{SYNTH_VERSION}' and is_synthetic_complete(p, 6, 1)
    before = digest(p)
    assert ensure_synthetic(recordings=6, seed=1) == p and digest(p) == before  # reused, not rebuilt
    assert [q.name for q in p.parent.iterdir()] == [p.name]  # no temporary folder left behind
    with pytest.raises(FileExistsError, match='not a complete'): ensure_synthetic(p, recordings=7, seed=1)
    q = ensure_synthetic(tmp_path/'explicit', recordings=6, seed=1)
    assert digest(q) == before
