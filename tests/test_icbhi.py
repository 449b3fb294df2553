"""Tests of patchmix_nb.icbhi: validation messages, layouts, aliases, splits and the real ICBHI counts."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from patchmix_nb.icbhi import CLASSES, DEVICES, ICBHIError, Cycle, RecordingName, cycle_label, diagnosis_label, meditron_stem, parse_stem, read_aliases, read_annotation, read_diagnosis, read_folds, read_split
from patchmix_nb.dataset import class_counts, load_index, patients_in_both_splits, protocol_stats, split_cycles, split_recordings, validation_patients

ICBHI = Path(os.environ.get('PATCHMIX_ICBHI', Path(__file__).resolve().parents[2]/'shared'/'icbhi'))
needs_real = pytest.mark.skipif(not (ICBHI/'annotations').is_dir(), reason=f'ICBHI data not found at {ICBHI}')
needs_sample = pytest.mark.skipif(not (ICBHI/'sample'/'ICBHI_final_database').is_dir(),
                                  reason=f'ICBHI sample not found at {ICBHI}')


def write_rec(d: Path, stem: str, rows=((0.1, 1.0, 0, 0), (1.0, 2.0, 1, 0)), sr: int | None = 4000,
              dur: float = 3.0) -> None:
    "An annotation (and a wav of `dur` seconds at `sr`, unless sr is None) in folder d."
    d.mkdir(parents=True, exist_ok=True)
    (d/f'{stem}.txt').write_text(''.join('\t'.join(map(str, r)) + '\n' for r in rows))
    if sr: sf.write(d/f'{stem}.wav', np.zeros(int(dur * sr), 'float32'), sr, subtype='PCM_16')


def write_meta(d: Path, split: dict, diagnosis: str | None = None, folds: str | None = None):
    (d/'ICBHI_challenge_train_test.txt').write_text(''.join(f'{s}\t{v}\n' for s, v in split.items()))
    pats = sorted({int(s.split('_')[0]) for s in split})
    (d/'ICBHI_Challenge_diagnosis.txt').write_text(diagnosis if diagnosis is not None
                                                  else ''.join(f'{p}\tCOPD\n' for p in pats))
    (d/'patient_list_foldwise.txt').write_text(folds if folds is not None
                                               else ''.join(f'{p} {i % 5}\n' for i, p in enumerate(pats)))


A, B, C = '101_1b1_Al_sc_Meditron', '102_1b1_Ar_sc_Meditron', '103_2b2_Ar_mc_LittC2SE'


# ---------------------------------------------------------------- labels and names
def test_labels():
    assert [cycle_label(c, w) for c, w in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 1, 2, 3]
    assert [cycle_label(c, w, 2) for c, w in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 1, 1, 1]
    assert [diagnosis_label(d) for d in ('Healthy', 'COPD', 'Bronchiectasis', 'Asthma', 'URTI', 'LRTI',
                                         'Pneumonia', 'Bronchiolitis')] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert diagnosis_label('Healthy', 2) == 0 and diagnosis_label('URTI', 2) == 1
    with pytest.raises(ValueError, match='n_cls must be 4 or 2'): cycle_label(0, 0, 3)
    with pytest.raises(ValueError, match='unknown diagnosis'): diagnosis_label('flu')
    assert Cycle(1.0, 3.5, 1, 1).label == 3 and Cycle(1.0, 3.5, 1, 1).duration == 2.5
    assert CLASSES == ('normal', 'crackle', 'wheeze', 'both')
    assert DEVICES == {'Meditron': 0, 'LittC2SE': 1, 'Litt3200': 2, 'AKGC417L': 3}


def test_parse_stem():
    assert parse_stem('226_1b1_Pl_sc_LittC2SE') == RecordingName(226, '1b1', 'Pl', 'sc', 'LittC2SE')
    assert parse_stem('101_1b1_Al_sc_Meditron').device_id == 0
    for stem, msg in [('101_1b1_Al_sc', "5 \"_\"-separated fields"), ('100_1b1_Al_sc_Meditron', 'unknown patient'),
                      ('227_1b1_Al_sc_Meditron', 'unknown patient'), ('x01_1b1_Al_sc_Meditron', 'unknown patient'),
                      ('101_1b1_Zz_sc_Meditron', 'unknown chest location'),
                      ('101_1b1_Al_xx_Meditron', 'unknown acquisition mode'),
                      ('101_1b1_Al_sc_iPhone', 'unknown device')]:
        with pytest.raises(ICBHIError, match=msg) as e: parse_stem(stem)
        assert stem in str(e.value)


def test_error_format_and_pickle():
    e = ICBHIError('bad', 'x/y.txt', 3)
    assert str(e) == 'x/y.txt:3: bad' and isinstance(e, ValueError)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.line, str(e2)) == ('x/y.txt', 3, 'x/y.txt:3: bad')


# ---------------------------------------------------------------- annotation validation
@pytest.mark.parametrize('text,line,msg', [
    ('0.1\t1.0\t0\t0\n1.0\t2.0\t0\n', 2, 'expected 4 tab-separated columns'),
    ('0.1\t1.0\t0\t0\t7\n', 1, 'got 5'),
    ('0.1\tabc\t0\t0\n', 1, "end must be a number of seconds, got 'abc'"),
    ('x\t1.0\t0\t0\n', 1, "start must be a number of seconds, got 'x'"),
    ('0.1\tnan\t0\t0\n', 1, 'must be a finite number'),
    ('0.5\t0.5\t0\t0\n', 1, 'must be after its start'),
    ('\n0.1\t1.0\t0\t0\n2.0\t1.0\t0\t0\n', 3, 'cycle end 1.0 s must be after its start 2.0 s'),
    ('-0.1\t1.0\t0\t0\n', 1, 'start must not be negative'),
    ('0.1\t1.0\t2\t0\n', 1, "crackle flag must be 0 or 1, got '2'"),
    ('0.1\t1.0\t0\t1.0\n', 1, "wheeze flag must be 0 or 1, got '1.0'"),
])
def test_read_annotation_errors(tmp_path, text, line, msg):
    p = tmp_path/'101_1b1_Al_sc_Meditron.txt'
    p.write_text(text)
    with pytest.raises(ICBHIError) as e: read_annotation(p)
    assert e.value.line == line and Path(e.value.path) == p
    assert str(e.value).startswith(f'{p}:{line}: ') and msg in str(e.value)


def test_read_annotation_ok_and_file_errors(tmp_path):
    p = tmp_path/'a.txt'
    p.write_text('0.036\t0.579\t0\t0\n0.579\t2.45\t1\t1')  # no final newline, like the real files
    assert read_annotation(p) == [Cycle(0.036, 0.579, 0, 0), Cycle(0.579, 2.45, 1, 1)]
    with pytest.raises(ICBHIError, match='annotation file not found') as e: read_annotation(tmp_path/'none.txt')
    assert 'none.txt' in str(e.value)
    (tmp_path/'empty.txt').write_text('\n \n')
    with pytest.raises(ICBHIError, match='empty.txt: annotation file has no cycles'): read_annotation(tmp_path/'empty.txt')
    (tmp_path/'bin.txt').write_bytes(b'\xff\xfe\x00\x81')
    with pytest.raises(ICBHIError, match='bin.txt: cannot read annotation file'): read_annotation(tmp_path/'bin.txt')


def test_meta_readers(tmp_path):
    (tmp_path/'s.txt').write_text(f'{A}\ttrain\n{B}\tvalid\n{C}\ttest\textra\n{A}\ttest\n')
    probs = []
    assert read_split(tmp_path/'s.txt', probs) == {A: 'train'}
    assert [(e.line, m in str(e)) for e, m in zip(probs, ('train or test', 'expected 2 columns', 'duplicate'))] == \
        [(2, True), (3, True), (4, True)]
    with pytest.raises(ICBHIError, match=r's.txt:2: split must be train or test'): read_split(tmp_path/'s.txt')
    (tmp_path/'d.txt').write_text('101\tCOPD\n300\tCOPD\n102\n103\tFlu\n')
    probs = []
    assert read_diagnosis(tmp_path/'d.txt', probs) == {101: 'COPD'}
    assert [e.line for e in probs] == [2, 3, 4]
    assert "d.txt:2: unknown patient '300'" in str(probs[0]) and 'unknown diagnosis' in str(probs[2])
    (tmp_path/'f.txt').write_text('101 0\n102 x\n')
    with pytest.raises(ICBHIError, match="f.txt:2: fold must be a non-negative integer, got 'x'"):
        read_folds(tmp_path/'f.txt')
    (tmp_path/'al.txt').write_text("'101_1b1_Al_sc_AKGC417L'\n'101_1b1_Al_sc_Litt3200'\n")
    probs = []
    assert read_aliases(tmp_path/'al.txt', probs) == {'101_1b1_Al_sc_AKGC417L': A}
    assert probs[0].line == 2 and 'must end in one of' in str(probs[0])


# ---------------------------------------------------------------- load_index validation
def test_load_index_flat_layout_and_problems(tmp_path):
    d = tmp_path/'flat'
    write_rec(d, A)
    write_rec(d, B, rows=((0.1, 1.0, 0, 0), (1.0, 3.5, 0, 1)), dur=3.0)  # cycle past the 3 s audio (line 2)
    write_rec(d, C, sr=None)  # no audio: fine
    write_rec(d, '104_1b1_Al_sc_Litt3200', sr=None)
    (d/'104_1b1_Al_sc_Litt3200.wav').write_bytes(b'not a wav at all')  # unsupported audio
    write_rec(d, '105_1b1_Tc_sc_Meditron', sr=None)
    sf.write(d/'105_1b1_Tc_sc_Meditron.wav', np.zeros((100, 2), 'float32'), 4000)  # stereo
    write_rec(d, '106_1b1_Tc_sc_Meditron', sr=None)
    sf.write(d/'106_1b1_Tc_sc_Meditron.wav', np.zeros(0, 'float32'), 4000)  # 0 frames
    write_rec(d, '107_1b1_Tc_sc_Meditron', rows=((0.1, 1.0, 0, 0), (1.0, 0.9, 0, 0)))  # bad annotation, line 2
    write_rec(d, '108_1b1_Tc_sc_Meditron')  # not in the split
    write_rec(d, '109_1b1_Tc_zz_Meditron')  # malformed name
    sf.write(d/'110_1b1_Tc_sc_Meditron.wav', np.zeros(400, 'float32'), 4000)  # wav without txt
    (d/'README.txt').write_text('hello')
    split = {s: 'train' for s in (A, B, C, '104_1b1_Al_sc_Litt3200', '105_1b1_Tc_sc_Meditron',
                                  '106_1b1_Tc_sc_Meditron', '107_1b1_Tc_sc_Meditron')}
    split['111_1b1_Tc_sc_Meditron'] = 'test'  # entry without files (line 8)
    write_meta(d, split, diagnosis='101\tCOPD\n102\tHealthy\n103\tURTI\n777\tCOPD\n')
    ix = load_index(d)
    assert sorted(ix.recordings.stem) == [A, C]
    assert ix.recordings.set_index('stem').wav[C] is None and ix.recordings.set_index('stem').wav[A] is not None
    got = {(Path(e.path).name, e.line): str(e) for e in ix.problems}
    expect = {
        (f'{B}.txt', 2): 'cycle ends at 3.5 s, after the end of its audio (3 s',
        ('104_1b1_Al_sc_Litt3200.wav', None): 'unreadable or unsupported audio',
        ('105_1b1_Tc_sc_Meditron.wav', None): 'must be mono, got 2 channels',
        ('106_1b1_Tc_sc_Meditron.wav', None): '0 frames',
        ('107_1b1_Tc_sc_Meditron.txt', 2): 'must be after its start',
        ('108_1b1_Tc_sc_Meditron.txt', None): 'no entry in the split file',
        ('109_1b1_Tc_zz_Meditron.txt', None): "unknown acquisition mode 'zz'",
        ('110_1b1_Tc_sc_Meditron.wav', None): 'no annotation file',
        ('ICBHI_challenge_train_test.txt', 8): "split entry '111_1b1_Tc_sc_Meditron' has no annotation file",
        ('ICBHI_Challenge_diagnosis.txt', 4): "unknown patient '777'",
    }
    assert set(got) == set(expect), set(got) ^ set(expect)
    for k, m in expect.items(): assert m in got[k], (k, got[k])
    s = ix.summary(n=2)
    assert 'ICBHI index of' in s and '2 recordings' in s and 'refused: 10 problem(s)' in s and '8 more' in s
    assert any('README.txt' in n for n in ix.notes) and any('no audio' in n for n in ix.notes)
    assert ix.stats()['audio'] == {'present': 1, 'missing': 1} and ix.stats()['refused'] == 10
    with pytest.raises(ICBHIError, match='unknown patient'):  # meta files are read first
        load_index(d, strict=True)


def test_strict_and_tolerance(tmp_path):
    d = tmp_path/'x'
    write_rec(d, A, rows=((0.1, 3.005, 0, 0),), dur=3.0)  # 5 ms past the end: within the 10 ms tolerance
    write_rec(d, B, rows=((0.1, 1.0, 0, 0), ('0.1', '1e', 0, 0)))
    write_meta(d, {A: 'train', B: 'test'})
    ix = load_index(d)
    assert list(ix.recordings.stem) == [A] and len(ix.problems) == 1
    assert str(ix.problems[0]).startswith(f'{d/B}.txt:2: ')
    with pytest.raises(ICBHIError, match=f'{B}.txt:2: end must be a number'): load_index(d, strict=True)
    ix = load_index(d, end_tolerance=0.001)
    assert len(ix.recordings) == 0 and 'after the end of its audio' in str(ix.problems[0])
    ix = load_index(d, audio=False, end_tolerance=0.001)  # headers not read: no audio check
    assert list(ix.recordings.stem) == [A] and ix.recordings.sample_rate.isna().all()


def test_missing_meta_and_explicit_files(tmp_path):
    d = tmp_path/'x'
    write_rec(d, A, sr=None)
    ix = load_index(d)  # no metadata at all: still indexes, and says so
    assert len(ix.recordings) == 1 and ix.recordings.split.isna().all() and ix.recordings.fold.tolist() == [-1]
    assert sum('no split file found' in n for n in ix.notes) == 1
    with pytest.raises(ValueError, match='no official split'): split_cycles(ix)
    with pytest.raises(ICBHIError, match='split file not found'): load_index(d, split_file=tmp_path/'nope.txt')
    with pytest.raises(ICBHIError, match='data folder not found'): load_index(tmp_path/'nowhere')
    other = tmp_path/'meta'
    other.mkdir()
    write_meta(other, {A: 'test'})
    ix = load_index(d, split_file=other/'ICBHI_challenge_train_test.txt',
                    folds_file=other/'patient_list_foldwise.txt')
    assert ix.recordings.split.tolist() == ['test'] and ix.recordings.fold.tolist() == [0]


def test_official_layout_and_parent_search(tmp_path):
    root = tmp_path/'icbhi'
    write_rec(root/'ICBHI_final_database', A, sr=44100)
    write_rec(root/'ICBHI_final_database', B, sr=4000)
    write_meta(root, {A: 'train', B: 'test'})
    ix = load_index(root)
    assert ix.problems == [] and sorted(ix.stats()['sample_rates']) == [4000, 44100]
    assert ix.files['split'] == root/'ICBHI_challenge_train_test.txt'
    ann = tmp_path/'icbhi2'/'annotations'
    write_rec(ann, A, sr=None)
    write_meta(ann.parent, {A: 'train'})
    ix = load_index(ann)  # metadata in the parent folder
    assert ix.problems == [] and ix.recordings.split.tolist() == ['train'] and ix.recordings.diagnosis.tolist() == ['COPD']


# ---------------------------------------------------------------- Meditron alias
def test_alias_mapping(tmp_path):
    alt = '101_1b1_Al_sc_AKGC417L'
    assert meditron_stem(alt) == A and meditron_stem('105_1b1_Tc_sc_LittC2SE') == '105_1b1_Tc_sc_Meditron'
    d = tmp_path/'x'
    write_rec(d, alt)
    write_rec(d, B)
    write_meta(d, {A: 'test', B: 'train'})
    (d/'filename_differences.txt').write_text(f"'{alt}'\n'102_1b1_Ar_sc_AKGC417L'\n")
    ix = load_index(d)
    assert ix.problems == [] and ix.aliases == {alt: A}
    r = ix.recordings.set_index('stem')
    assert r.file_stem[A] == alt and r.split[A] == 'test' and r.device[A] == 'Meditron' and r.device_id[A] == 0
    assert r.wav[A].endswith(f'{alt}.wav') and any('alternate name' in n for n in ix.notes)
    assert set(ix.cycles.stem) == {A, B}
    (d/'filename_differences.txt').unlink()
    assert load_index(d).aliases == {alt: A}  # without the list: the suffix rule
    (d/'filename_differences.txt').write_text(f"'102_1b1_Ar_sc_AKGC417L'\n")
    ix = load_index(d)  # listed file exists but does not list this stem: no alias, both sides reported
    assert ix.aliases == {} and {Path(e.path).name for e in ix.problems} == {f'{alt}.txt', 'ICBHI_challenge_train_test.txt'}
    (d/'filename_differences.txt').unlink()
    write_rec(d, A)  # both names present: the Meditron file wins, the alternate is unlisted in the split
    ix = load_index(d)
    assert ix.aliases == {} and [Path(e.path).name for e in ix.problems] == [f'{alt}.txt']


# ---------------------------------------------------------------- splits
def _split_dataset(tmp_path) -> Path:
    d = tmp_path/'s'
    split, folds = {}, []
    for i, p in enumerate(range(101, 141)):
        for j, loc in enumerate(('Al', 'Ar')):
            s = f'{p}_1b1_{loc}_sc_Meditron'
            write_rec(d, s, sr=None)
            split[s] = 'test' if (i % 3 == 0 or (p == 139 and j == 1)) else 'train'
        folds.append(f'{p} {i % 5}')
    write_meta(d, split, folds='\n'.join(folds))
    return d


def test_splits_patient_level(tmp_path):
    ix = load_index(_split_dataset(tmp_path))
    rec = ix.recordings
    assert patients_in_both_splits(ix) == [139]
    test_pats = set(rec.patient[rec.split == 'test'])
    for fold in ('official', 0, 3):
        for seed in (0, 1):
            r = split_recordings(ix, fold, 0.2, seed)
            pats = {k: set(rec.patient[r == k]) for k in ('train', 'val', 'test')}
            assert not pats['val'] & pats['test'] and not pats['val'] & pats['train']
            if fold != 'official':
                assert not pats['train'] & pats['test']
                assert pats['test'] == set(rec.patient[rec.fold == fold])
            else:
                assert pats['test'] == test_pats and 139 not in pats['val']
            assert split_recordings(ix, fold, 0.2, seed).equals(r)  # deterministic
            c = split_cycles(ix, fold, 0.2, seed)
            assert (c.to_numpy() == ix.cycles.stem.map(dict(zip(rec.stem, r))).to_numpy()).all()
    cands = len(set(rec.patient) - test_pats)
    assert len(validation_patients(ix, 'official', 0.2, 0)) == round(0.2 * cands)
    assert validation_patients(ix, 'official', 0.2, 0) != validation_patients(ix, 'official', 0.2, 1)
    assert validation_patients(ix, 'official', 0.0) == [] and (split_recordings(ix, val_fraction=0) != 'val').all()
    with pytest.raises(ValueError, match='val_fraction'): validation_patients(ix, 'official', 1.0)
    with pytest.raises(ValueError, match='no fold 7'): split_cycles(ix, 7)
    with pytest.raises(ValueError, match="'official', 'official-disjoint' or a fold number"): split_cycles(ix, 'fold0')
    # the leak-free protocol: the official test set without patient 139's test recordings, the training set unchanged
    r, o = split_recordings(ix, 'official-disjoint', 0.2, 0), split_recordings(ix, 'official', 0.2, 0)
    assert set(rec.patient[r == 'excluded']) == {139} and (o[r == 'excluded'] == 'test').all()
    assert (r[o != 'test'] == o[o != 'test']).all() and not set(rec.patient[r == 'test']) & set(rec.patient[r != 'test'])
    p = protocol_stats(ix, 'official-disjoint')
    n_out = int((split_cycles(ix, 'official-disjoint') == 'excluded').sum())
    assert n_out > 0 and p['removed_patients'] == {139: n_out}
    assert p['test_cycles'] + p['removed_cycles'] == protocol_stats(ix)['test_cycles'] == p['official_test_cycles']


# ---------------------------------------------------------------- the real database
@needs_real
def test_real_counts():
    ix = load_index(ICBHI/'annotations')
    s = ix.stats()
    assert ix.problems == []
    assert (s['recordings'], s['cycles'], s['patients']) == (920, 6898, 126)
    assert s['audio'] == {'present': 0, 'missing': 920} and s['sample_rates'] == {}
    tr, te = s['splits']['train'], s['splits']['test']
    assert (tr['recordings'], tr['cycles'], te['recordings'], te['cycles']) == (539, 4142, 381, 2756)
    assert tr['classes'] == {'normal': 2063, 'crackle': 1215, 'wheeze': 501, 'both': 363}
    assert te['classes'] == {'normal': 1579, 'crackle': 649, 'wheeze': 385, 'both': 143}
    assert s['classes'] == {'normal': 3642, 'crackle': 1864, 'wheeze': 886, 'both': 506}
    assert s['patients_in_both'] == [156, 218]
    both = ix.recordings[ix.recordings.patient.isin([156, 218])]
    assert (len(both), (both.split == 'train').sum(), (both.split == 'test').sum()) == (25, 13, 12)
    assert s['devices']['Meditron']['recordings'] == 127
    d = s['durations']
    assert (d['min'], d['max'], d['over_8s'], d['under_0_5s']) == (0.2, 16.163, 15, 41)
    assert abs(d['median'] - 2.54) < 0.005 and abs(d['mean'] - 2.70) < 0.005
    long = ix.cycles[ix.cycles.duration > 8]
    assert ((long.split == 'train').sum(), (long.split == 'test').sum()) == (10, 5)
    folds = class_counts(ix.cycles, 'fold')
    assert folds.loc[:, ['total', *CLASSES]].values.tolist() == [
        [3455, 1566, 1198, 349, 342], [704, 457, 87, 104, 56], [536, 403, 107, 22, 4],
        [759, 441, 81, 205, 32], [1444, 775, 391, 206, 72]]
    assert ix.recordings.groupby('fold').patient.nunique().tolist() == [26, 25, 25, 25, 25]
    for k in range(5):  # fold splits are patient-disjoint, validation too
        r = split_recordings(ix, k, 0.15, 0)
        pats = {v: set(ix.recordings.patient[r == v]) for v in ('train', 'val', 'test')}
        assert not (pats['train'] | pats['val']) & pats['test'] and not pats['train'] & pats['val']
        assert (split_cycles(ix, k, 0.15, 0) == 'test').sum() == folds['total'][k]
    vp = validation_patients(ix, 'official', 0.15, 0)
    assert 156 not in vp and 218 not in vp and len(vp) == round(0.15 * 77)
    assert load_index(ICBHI/'annotations').recordings.equals(ix.recordings)


@needs_real
def test_real_leak_free_protocol(capsys):
    "The official split leaks patients 156 and 218: the leak-free test set keeps 2,636 of 2,756 cycles."
    from patchmix_nb.cli import main
    p = protocol_stats(load_index(ICBHI/'annotations'), 'official-disjoint')
    assert (p['test_cycles'], p['official_test_cycles'], p['train_cycles']) == (2636, 2756, 4142)
    assert p['removed_patients'] == {156: 61, 218: 59} and p['test_patients'] == 47
    assert main(['stats', str(ICBHI/'annotations'), '--test-fold', 'official-disjoint']) == 0
    assert ('kept 2636 of 2756 official test cycles, removed patients 156 (61 cycles), 218 (59 cycles)'
            in capsys.readouterr().out)


@needs_real
def test_real_aliases_file():
    al = read_aliases(ICBHI/'filename_differences.txt')
    assert len(al) == 91 and al['101_1b1_Al_sc_AKGC417L'] == A
    assert set(al.values()) <= set(read_split(ICBHI/'ICBHI_challenge_train_test.txt'))
    assert len(read_diagnosis(ICBHI/'ICBHI_Challenge_diagnosis.txt')) == 126
    assert len(read_folds(ICBHI/'patient_list_foldwise.txt')) == 126


@needs_sample
def test_sample_with_audio():
    ix = load_index(ICBHI/'sample')
    assert ix.problems == [] and len(ix.recordings) == 10
    s = ix.stats()
    assert s['audio'] == {'present': 10, 'missing': 0}
    assert s['sample_rates'] == {4000: 6, 44100: 4}
    r = ix.recordings.set_index('stem')
    assert r.wav.notna().all() and set(r.subtype) == {'PCM_16', 'PCM_24', 'PCM_32'}
    assert (r.sample_rate[A], r.frames[A], r.duration[A]) == (44100, 882000, 20.0)
    assert r.fold.ge(0).all() and r.diagnosis.notna().all()  # folds from the parent folder
    assert (ix.cycles.groupby('stem').end.max() <= r.duration + 0.01).all()
