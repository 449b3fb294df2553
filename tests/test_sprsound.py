"Tests of the SPRSound reader, index, tasks, metrics and synthetic generator (patchmix_nb.sprsound)."
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from patchmix_nb.icbhi import ICBHIError
from patchmix_nb.synthetic import cycle_cues
from patchmix_nb.sprsound import (EVENT_LABELS, RECORD_LABELS, ROOT, SPR_MARKER, SPLITS, TASKS, TEST_JSON, TEST_WAV,
                                  TRAIN_JSON, TRAIN_WAV, SPRSoundError, get_task, is_sprsound, load_index,
                                  make_synthetic_sprsound, parse_name, plan_sprsound, read_annotation, record_label,
                                  render_sprsound, split_recordings, sprsound_root, sprsound_score, task_labels,
                                  total_score, validation_patients)

NAME = re.compile(r'^\d{8}_\d+\.\d_[01]_p[1-4]_\d+$')
MS = re.compile(r'^\d+$')


def digest(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(d.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def syn(tmp_path_factory) -> Path:
    return make_synthetic_sprsound(tmp_path_factory.mktemp('spr') / 'set', recordings=12, seed=0)


# ---- the reader

def test_reads_a_released_file_sorted_in_seconds(tmp_path):
    # the text of BioCAS2022/test2022_json/inter_test_json/40890405_3.3_0_p3_3655.json in the SPRSound repository
    f = tmp_path/'40890405_3.3_0_p3_3655.json'
    f.write_text('{"record_annotation": "Normal", "event_annotation": [{"start": "5778", "end": "7419", "type": "Normal"}, '
                 '{"start": "9234", "end": "10888", "type": "Normal"}, {"start": "11061", "end": "12607", "type": "Normal"}, '
                 '{"start": "7702", "end": "8879", "type": "Normal"}]}')
    a = read_annotation(f)
    assert a.record == 'Normal' and a.dropped == []
    assert [(e.start, e.end, e.index) for e in a.events] == [(5.778, 7.419, 0), (7.702, 8.879, 3), (9.234, 10.888, 1),
                                                             (11.061, 12.607, 2)]
    f.write_text('{"record_annotation": "DAS", "event_annotation": [{"start": 342, "end": 2515, "type": "Fine Crackle"}]}')
    assert read_annotation(f).events[0].end == 2.515            # integer times (the top-level README's example)


@pytest.mark.parametrize('text, where, what', [
    ('{"record_annotation": "Normal", "event_annotation": [', 'line 1', 'malformed JSON'),
    ('[1, 2]', None, 'expected a JSON object'),
    ('{"event_annotation": []}', 'record_annotation', 'missing key'),
    ('{"record_annotation": "Abnormal", "event_annotation": []}', 'record_annotation', "unknown record label 'Abnormal'"),
    ('{"record_annotation": "CAS", "event_annotation": {}}', 'event_annotation', 'expected a list of events'),
    ('{"record_annotation": "CAS", "event_annotation": [{"start": "1", "type": "Wheeze"}]}', 'event_annotation[0]',
     'expected an object with "start", "end" and "type"'),
    ('{"record_annotation": "CAS", "event_annotation": [{"start": "1", "end": "9", "type": "wheeze"}]}',
     'event_annotation[0].type', "unknown event label 'wheeze'"),
    ('{"record_annotation": "CAS", "event_annotation": [{"start": "-5", "end": "9", "type": "Wheeze"}]}',
     'event_annotation[0].start', 'whole milliseconds'),
    ('{"record_annotation": "CAS", "event_annotation": [{"start": "1", "end": 2.5, "type": "Wheeze"}]}',
     'event_annotation[0].end', 'whole milliseconds'),
    ('{"record_annotation": "CAS", "event_annotation": [{"start": "10", "end": "20", "type": "Wheeze"}, '
     '{"start": "900", "end": "100", "type": "Wheeze"}]}', 'event_annotation[1]', 'event ends at 100 ms, before it starts'),
])
def test_bad_annotations_are_one_line_naming_file_and_key(tmp_path, text, where, what):
    f = tmp_path/'41000000_3.4_1_p2_1.json'
    f.write_text(text)
    with pytest.raises(SPRSoundError) as e:
        read_annotation(f)
    msg = str(e.value)
    assert isinstance(e.value, ICBHIError) and '\n' not in msg and what in msg, msg
    assert msg.startswith(f'{f}:{where}: ' if where else f'{f}: '), msg
    assert e.value.line == where


def test_zero_length_events_are_skipped_and_reported(tmp_path):
    f = tmp_path/'a.json'
    f.write_text('{"record_annotation": "Normal", "event_annotation": [{"start": "7", "end": "7", "type": "Normal"}, '
                 '{"start": "8", "end": "900", "type": "Normal"}]}')
    a = read_annotation(f)
    assert (len(a.events), a.dropped) == (1, ['event_annotation[0]'])


@pytest.mark.parametrize('stem, what', [('41000000_3.4_1_p2', '5 "_"-separated fields'), ('4100000a_3.4_1_p2_1', 'patient'),
                                        ('41000000_old_1_p2_1', "age 'old'"), ('41000000_30.0_1_p2_1', "age '30.0'"),
                                        ('41000000_3.4_M_p2_1', "gender 'M'"), ('41000000_3.4_1_Al_1', "location 'Al'"),
                                        ('41000000_3.4_1_p2_x', "recording number 'x'")])
def test_bad_names(stem, what):
    with pytest.raises(SPRSoundError, match=re.escape(what)):
        parse_name(stem)
    n = parse_name('65058931_0.2_0_p4_3246')
    assert (n.patient, n.age, n.gender, n.location, n.number) == ('65058931', 0.2, 0, 'p4', 3246)


# ---- the synthetic set and the index

def test_synthetic_layout_and_format(syn):
    root = syn/ROOT
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_dir()) == sorted(
        [TRAIN_WAV, TRAIN_JSON, TEST_WAV, TEST_JSON, f'{TEST_JSON}/intra_test_json', f'{TEST_JSON}/inter_test_json'])
    jsons = sorted(root.rglob('*.json'))
    wavs = sorted(root.rglob('*.wav'))
    assert len(jsons) == len(wavs) == 12 and (syn/SPR_MARKER).is_file()
    assert {p.stem for p in (root/TRAIN_JSON).glob('*.json')} == {p.stem for p in (root/TRAIN_WAV).glob('*.wav')}
    unsorted = 0
    for j in jsons:
        assert NAME.match(j.stem), j.stem
        text = j.read_text()
        assert '\n' not in text and text.startswith('{"record_annotation": "')
        d = json.loads(text)
        assert all(MS.match(e['start']) and MS.match(e['end']) and e['type'] in EVENT_LABELS
                   for e in d['event_annotation'])
        starts = [int(e['start']) for e in d['event_annotation']]
        unsorted += starts != sorted(starts)
        if d['record_annotation'] == 'Poor Quality': assert d['event_annotation'] == []
        else: assert record_label(e['type'] for e in d['event_annotation']) == d['record_annotation']
    assert unsorted > 0                                             # events written in no particular order
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, 'PCM_16')


def test_index_reads_the_synthetic_set_back(syn):
    idx = load_index(syn)
    plan = plan_sprsound(12, seed=0)
    s = idx.stats()
    assert idx.problems == [] and s['recordings'] == 12 and s['events'] == sum(len(r.events) for r in plan)
    assert {k: v['recordings'] for k, v in s['splits'].items()} == {k: sum(r.split == k for r in plan) for k in SPLITS}
    assert all(v['recordings'] > 0 for v in s['splits'].values())
    assert s['patients_in_train'] == {'intra-test': s['splits']['intra-test']['patients'], 'inter-test': 0}
    assert s['sample_rates'] == {8000: 12} and s['records_disagreeing_with_events'] == 0
    assert all(s['records'][k] > 0 for k in RECORD_LABELS)
    r = idx.recordings.set_index('stem')
    for p in plan:
        assert r.loc[p.stem, 'split'] == p.split and r.loc[p.stem, 'record'] == p.record
        ev = idx.events[idx.events.stem == p.stem]
        assert list(zip((ev.start * 1000).round().astype(int), (ev.end * 1000).round().astype(int), ev.type)) == p.events
    assert load_index(syn/ROOT, audio=False).stats()['events'] == s['events']   # BioCAS2022/ itself; no audio read


def test_layout_is_recognised_by_itself(syn, tmp_path):
    assert is_sprsound(syn) and is_sprsound(syn/ROOT) and sprsound_root(syn) == syn/ROOT
    assert not is_sprsound(tmp_path) and not is_sprsound(syn/ROOT/TRAIN_WAV)
    (tmp_path/'x'/TEST_JSON/'inter_test_json').mkdir(parents=True)          # a test-only download is one too
    assert is_sprsound(tmp_path/'x')
    (tmp_path/'icbhi'/'ICBHI_final_database').mkdir(parents=True)            # ICBHI's layout is not
    assert not is_sprsound(tmp_path/'icbhi')
    with pytest.raises(SPRSoundError, match='not an SPRSound folder'):
        load_index(tmp_path)


def test_same_seed_same_bytes_other_seed_other_set(tmp_path):
    a = make_synthetic_sprsound(tmp_path/'a', recordings=4, seed=3)
    b = make_synthetic_sprsound(tmp_path/'b', recordings=4, seed=3)
    c = make_synthetic_sprsound(tmp_path/'c', recordings=4, seed=4)
    assert digest(a) == digest(b) and digest(a) != digest(c)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []   # no temporary folder left


def test_synthetic_sounds_carry_their_labels():
    "Model-free cues on the rendered events: wheezes are tonal, fine crackles are clicks (05_synthetic's measures)."
    cues = {}
    for r in plan_sprsound(30, seed=0):
        x = render_sprsound(r)
        for s, e, kind in r.events:
            cues.setdefault(kind, []).append(cycle_cues(x[s * 8:e * 8], 8000))
    med = {k: {m: float(np.median([c[m] for c in v])) for m in ('peak_db', 'transients')} for k, v in cues.items()}
    assert med['Wheeze']['peak_db'] > med['Normal']['peak_db'] + 6, med
    assert med['Fine Crackle']['transients'] > med['Normal']['transients'] + 1, med


def test_bad_recordings_are_refused_and_the_folder_is_not_written(syn, tmp_path):
    d = tmp_path/'copy'
    shutil.copytree(syn, d)
    tj = sorted((d/ROOT/TRAIN_JSON).glob('*.json'), key=lambda j: (not read_annotation(j).events, j.name))  # tj[2]: events
    tj[0].write_text('{"record_annotation": "Normal", "event_annotation": [{"start": "900", "end": "100", "type": "Normal"}]}')
    (d/ROOT/TRAIN_WAV/f'{tj[1].stem}.wav').unlink()                                      # missing WAV
    sf.write(d/ROOT/TRAIN_WAV/f'{tj[2].stem}.wav', np.zeros(400, 'float32'), 8000, subtype='PCM_16')  # 50 ms long
    shutil.copy(tj[3], d/ROOT/TEST_JSON/'inter_test_json'/tj[3].name)                   # annotated twice
    (d/ROOT/TEST_WAV/'41000000_3.4_1_p2_9.wav').write_bytes((d/ROOT/TRAIN_WAV/f'{tj[4].stem}.wav').read_bytes())
    before = digest(d)
    idx = load_index(d)
    msgs = sorted(str(e) for e in idx.problems)
    assert len(idx.problems) == 4 and all('\n' not in m for m in msgs)
    assert any(m.startswith(f'{tj[0]}:event_annotation[0]: event ends at 100 ms') for m in msgs)
    assert any(m.startswith(f'{tj[1]}: no audio file beside this annotation (expected {tj[1].stem}.wav') for m in msgs)
    first = read_annotation(tj[2]).events[0].key                  # the event that ends first past the 50 ms of audio
    assert any(m.startswith(f'{tj[2]}:{first}: event ends at') and 'after the end of its audio (0.05 s in' in m
               for m in msgs), msgs
    assert any('also annotated in train2022_json' in m for m in msgs)
    assert any('1 WAV file(s)' in n and '41000000_3.4_1_p2_9' in n for n in idx.notes)
    assert len(idx.recordings) == 12 - 3
    with pytest.raises(SPRSoundError, match=re.escape(str(tj[0]))):
        load_index(d, strict=True)
    assert digest(d) == before


def test_generator_never_writes_into_data(syn, tmp_path):
    with pytest.raises(SPRSoundError, match='inside the SPRSound data folder'):
        make_synthetic_sprsound(syn/ROOT/TRAIN_WAV/'x', recordings=3)
    with pytest.raises(FileExistsError, match='not empty'):
        make_synthetic_sprsound(syn, recordings=3)
    (tmp_path/'icbhi'/'ICBHI_final_database').mkdir(parents=True)
    with pytest.raises(ICBHIError, match='inside the ICBHI data folder'):                 # nor into ICBHI
        make_synthetic_sprsound(tmp_path/'icbhi'/'spr', recordings=3)
    other = tmp_path/'mine'
    other.mkdir()
    (other/'notes.txt').write_text('keep')
    with pytest.raises(FileExistsError, match='replaces only an earlier synthetic set'):
        make_synthetic_sprsound(other, recordings=3, overwrite=True)
    assert (other/'notes.txt').read_text() == 'keep'
    again = make_synthetic_sprsound(tmp_path/'s', recordings=3, seed=1)
    make_synthetic_sprsound(again, recordings=4, seed=1, overwrite=True)                # an earlier synthetic set
    assert len(list((again/ROOT).rglob('*.json'))) == 4


# ---- tasks, metrics, splits

def test_tasks_follow_the_official_class_order(syn):
    # the dictionaries of the official baseline (scripts/BioCAS2023 Demo/train.py in the SPRSound repository)
    assert TASKS['1-1'].mapping == {'Normal': 0, 'Rhonchi': 1, 'Wheeze': 1, 'Stridor': 1, 'Coarse Crackle': 1,
                                    'Fine Crackle': 1, 'Wheeze+Crackle': 1}
    assert TASKS['1-2'].mapping == {'Normal': 0, 'Rhonchi': 1, 'Wheeze': 2, 'Stridor': 3, 'Coarse Crackle': 4,
                                    'Fine Crackle': 5, 'Wheeze+Crackle': 6}
    assert TASKS['2-1'].mapping == {'Normal': 0, 'Poor Quality': 1, 'CAS': 2, 'DAS': 2, 'CAS & DAS': 2}
    assert TASKS['2-2'].mapping == {'Normal': 0, 'Poor Quality': 1, 'CAS': 2, 'DAS': 3, 'CAS & DAS': 4}
    assert [len(t.classes) for t in TASKS.values()] == [2, 7, 3, 5]
    assert get_task(12) is TASKS['1-2'] and get_task('2-2') is TASKS['2-2']
    idx = load_index(syn, audio=False)
    y = task_labels(idx, '2-1')
    assert len(y) == len(idx.recordings) and (y == 1).sum() == (idx.recordings.record == 'Poor Quality').sum()
    assert (task_labels(idx, '1-1') == (idx.events.type != 'Normal')).all()
    with pytest.raises(ValueError, match='unknown SPRSound task'):
        get_task('1-3')


def test_scores_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    r = sprsound_score(y, np.array([0, 0, 0, 2, 1, 2, 2, 2, 0, 1]), 3)
    assert {k: r[k] for k in ('sp', 'se', 'as', 'hs', 'score')} == {'sp': 75., 'se': 50., 'as': 62.5, 'hs': 60.,
                                                                   'score': 61.25}
    assert r['confusion'] == [[3, 0, 1], [0, 1, 1], [1, 1, 2]]
    assert sprsound_score(y, np.zeros_like(y), 3)['score'] == 25.          # all "Normal": AS 50, HS 0
    assert sprsound_score(y, y, 3)['score'] == 100.
    assert sprsound_score([1, 1], [1, 1], 2)['sp'] == 0.                   # no normal item: Sp 0, not a crash
    # task 1-2: an adventitious event given another adventitious class is a miss; 1-1 only asks normal or not
    y12, p12 = np.array([0, 2, 1, 5]), np.array([0, 1, 1, 5])
    assert sprsound_score(y12, p12, 7)['se'] == pytest.approx(200 / 3)
    assert sprsound_score(y12 > 0, p12 > 0, 2)['se'] == 100.
    with pytest.raises(ValueError, match='differ in length'):
        sprsound_score([0, 1], [0], 2)
    with pytest.raises(ValueError, match=re.escape('y_pred: expected class indices in 0..1')):
        sprsound_score([0, 1], [0, 2], 2)
    assert total_score(80, 60) == 70 and total_score(80, 60, inter_weight=0.25) == 75
    with pytest.raises(ValueError, match='inter_weight'):
        total_score(80, 60, inter_weight=2)


def test_validation_patients_are_in_no_test_set(syn):
    idx = load_index(syn, audio=False)
    vp = validation_patients(idx, 0.5, seed=1)
    rec = idx.recordings
    assert vp and not set(vp) & set(rec.patient[rec.split != 'train'])
    assert vp == validation_patients(idx, 0.5, seed=1)
    s = split_recordings(idx, 0.5, seed=1)
    assert set(s) == {'train', 'val', 'intra-test', 'inter-test'} or set(s) == {'val', 'intra-test', 'inter-test'}
    assert (s[rec.split != 'train'] == rec.split[rec.split != 'train']).all()
    assert validation_patients(idx, 0) == []
