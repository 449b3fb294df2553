"""Bad input on the data side (stats, prepare, synth), run through the CLI as a user runs it.

Each case damages a copy of a small synthetic ICBHI folder, runs `patchmix ...` (in process: `cli.main`), and asserts
the exit code, that the error is ONE line naming the file (and line), and that the dataset folder is byte-for-byte
unchanged afterwards (the dataset is read-only to patchmix).
"""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from patchmix_nb.cli import main
from patchmix_nb.icbhi import AUDIO_DIR, DIAGNOSIS_FILE, SPLIT_FILE
from patchmix_nb.synthetic import make_synthetic


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('syn') / 'set', recordings=4, seed=0)


@pytest.fixture
def data(pristine, tmp_path):
    d = tmp_path / 'icbhi'
    shutil.copytree(pristine, d)
    return d


def checksums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def stems(data: Path) -> list[str]:
    return sorted(p.stem for p in (data / AUDIO_DIR).glob('*.txt'))


def txt(data, i=0) -> Path: return data / AUDIO_DIR / f'{stems(data)[i]}.txt'
def wav(data, i=0) -> Path: return data / AUDIO_DIR / f'{stems(data)[i]}.wav'


def lines(p: Path) -> list[str]: return p.read_text().splitlines()


def rename(data, new_stem):
    old = stems(data)[0]
    for ext in ('.txt', '.wav'):
        (data / AUDIO_DIR / f'{old}{ext}').rename(data / AUDIO_DIR / f'{new_stem}{ext}')
    return f'{new_stem}.txt'


def write_txt(data, rows: list[str], i=0):
    p = txt(data, i)
    p.write_text(''.join(r + '\n' for r in rows))
    return p.name


# Each case: (id, damage(data) -> the name the message must contain, expected extra text)
def _cols(d): return write_txt(d, ['0.1\t1.0\t0', '1.0\t2.0\t0\t0']) + ':1'
def _text(d): return write_txt(d, ['0.1\t1.0\t0\t0', '1.0\t2,5\t0\t0']) + ':2'
def _neg(d): return write_txt(d, ['-0.5\t1.0\t0\t0']) + ':1'
def _order(d): return write_txt(d, ['0.1\t1.0\t0\t0', '2.0\t1.5\t0\t0']) + ':2'
def _dup(d): return write_txt(d, ['0.1\t1.0\t0\t0', '1.0\t2.0\t1\t0', '0.1\t1.0\t0\t0']) + ':3'
def _overlap(d): return write_txt(d, ['0.1\t1.5\t0\t0', '1.0\t2.0\t1\t0']) + ':2'
def _flag(d): return write_txt(d, ['0.1\t1.0\t2\t0']) + ':1'
def _nan(d): return write_txt(d, ['0.1\tnan\t0\t0']) + ':1'
def _empty_txt(d):
    txt(d).write_bytes(b'')
    return txt(d).name
def _latin1(d):
    txt(d).write_bytes('0.1\t1.0\t0\t0 é\n'.encode('latin-1'))
    return txt(d).name
def _past_end(d):
    dur = sf.info(wav(d)).duration
    return write_txt(d, ['0.1\t1.0\t0\t0', f'1.0\t{dur + 24:.3f}\t1\t0']) + ':2'
def _device(d):
    s = stems(d)[0].rsplit('_', 1)[0]
    return rename(d, s + '_Stetho9000')
def _patient(d): return rename(d, '999_' + stems(d)[0].split('_', 1)[1])
def _location(d):
    p, i, _, m, dev = stems(d)[0].split('_')
    return rename(d, f'{p}_{i}_Zz_{m}_{dev}')
def _fields(d):
    p, i, l, m, dev = stems(d)[0].split('_')
    return rename(d, f'{p}_{i}_{l}_{dev}')
def _wav0(d):
    wav(d).write_bytes(b'')
    return wav(d).name
def _junk(d):
    wav(d).write_bytes(b'this is not audio at all' * 100)
    return wav(d).name
def _truncated(d):
    raw = wav(d).read_bytes()
    wav(d).write_bytes(raw[:len(raw) // 3])
    return stems(d)[0]  # the cycle past the (shorter) end, or the truncated wav: both name the recording
def _stereo(d):
    x, sr = sf.read(wav(d), dtype='float32')
    sf.write(wav(d), np.stack([x, x], 1), sr)
    return wav(d).name
def _slow(d):
    i = sf.info(wav(d))
    x = 0.1 * np.sin(np.arange(int(i.duration * 800) + 800)).astype(np.float32)
    sf.write(wav(d), x, 800, subtype='PCM_16')
    return wav(d).name
def _split_value(d):
    p = d / SPLIT_FILE
    ls = lines(p); ls[1] = ls[1].split('\t')[0] + '\tvalidate'
    p.write_text('\n'.join(ls))
    return SPLIT_FILE + ':2'
def _split_dup(d):
    p = d / SPLIT_FILE
    ls = lines(p); p.write_text('\n'.join(ls + [ls[0]]))
    return f'{SPLIT_FILE}:{len(ls) + 1}'
def _split_missing_entry(d):
    p = d / SPLIT_FILE
    s = stems(d)[0]
    p.write_text('\n'.join(l for l in lines(p) if not l.startswith(s)))
    return f'{s}.txt'
def _split_extra(d):
    p = d / SPLIT_FILE
    ls = lines(p); p.write_text('\n'.join(ls + ['226_9b9_Al_sc_Meditron\ttrain']))
    return f'{SPLIT_FILE}:{len(ls) + 1}'
def _split_cols(d):
    p = d / SPLIT_FILE
    ls = lines(p); ls[0] = ls[0] + '\textra'
    p.write_text('\n'.join(ls))
    return SPLIT_FILE + ':1'
def _diag_disease(d):
    p = d / DIAGNOSIS_FILE
    ls = lines(p); ls[0] = ls[0].split('\t')[0] + '\tFlu'
    p.write_text('\n'.join(ls))
    return DIAGNOSIS_FILE + ':1'
def _diag_patient(d):
    p = d / DIAGNOSIS_FILE
    ls = lines(p); p.write_text('\n'.join(ls + ['99\tCOPD']))
    return f'{DIAGNOSIS_FILE}:{len(ls) + 1}'
def _diag_binary(d):
    (d / DIAGNOSIS_FILE).write_bytes(b'\xff\xfe\x00garbage')
    return DIAGNOSIS_FILE
def _no_audio(d):
    wav(d).unlink()
    return stems(d)[0]


PREPARE_INDEX_CASES = {  # refused while indexing: prepare stops with exit 2 and one line, before any cache is written
    'columns': _cols, 'not-a-number': _text, 'negative-start': _neg, 'end-before-start': _order,
    'duplicated-cycle': _dup, 'overlapping-cycles': _overlap, 'bad-flag': _flag, 'nan-time': _nan,
    'empty-annotation': _empty_txt, 'not-utf8-annotation': _latin1, 'cycle-past-end': _past_end,
    'unknown-device': _device, 'unknown-patient': _patient, 'unknown-location': _location, 'four-fields': _fields,
    'wav-0-bytes': _wav0, 'wav-junk-header': _junk, 'wav-truncated': _truncated, 'wav-stereo': _stereo,
    'wav-800-Hz': _slow, 'split-bad-value': _split_value, 'split-duplicate': _split_dup,
    'split-missing-entry': _split_missing_entry, 'split-entry-without-files': _split_extra,
    'split-three-columns': _split_cols, 'diagnosis-unknown-disease': _diag_disease,
    'diagnosis-bad-patient': _diag_patient, 'diagnosis-not-text': _diag_binary, 'no-audio': _no_audio,
}


@pytest.mark.parametrize('case', list(PREPARE_INDEX_CASES))
def test_prepare_refuses(case, data, tmp_path, capsys):
    name = PREPARE_INDEX_CASES[case](data)
    before = checksums(data)
    rc, out, err = run(['prepare', data, '--cache', tmp_path / 'cache', '--workers', 1, '--no-progress'], capsys)
    assert rc == 2, (rc, out, err)
    msg = err.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith('patchmix prepare: error: '), err
    assert name in msg[0], (name, msg[0])
    assert 'missing=' not in msg[0] and 'Traceback' not in err  # no library argument without a CLI flag
    assert checksums(data) == before
    assert not (tmp_path / 'cache').exists() or not any((tmp_path / 'cache').iterdir())


def test_prepare_silent_recording(data, tmp_path, capsys):
    "Found while reading the samples (the header is fine): one line naming the wav, exit 2, no cache left."
    i = sf.info(wav(data))
    sf.write(wav(data), np.zeros(i.frames, np.float32), i.samplerate, subtype='PCM_16')
    before = checksums(data)
    rc, out, err = run(['prepare', data, '--cache', tmp_path / 'cache', '--workers', 1, '--no-progress'], capsys)
    assert rc == 2 and err.strip().splitlines() == [f'patchmix prepare: error: {wav(data)}: silent recording '
                                                    '(every sample is 0): no sound to classify']
    assert checksums(data) == before and list((tmp_path / 'cache').iterdir()) == []


def test_prepare_skip_bad_leaves_out_and_lists(data, tmp_path, capsys):
    _dup(data)
    before = checksums(data)
    rc, out, err = run(['prepare', data, '--cache', tmp_path / 'cache', '--workers', 1, '--no-progress', '--skip-bad'],
                       capsys)
    assert rc == 0, err
    warn = [l for l in err.splitlines() if 'left out' in l]
    assert len(warn) == 1 and f'{txt(data).name}:3: duplicated cycle' in warn[0]
    n = sum(len(lines(p)) for p in (data / AUDIO_DIR).glob('*.txt')) - 3
    assert f': {n} cycles' in out
    assert checksums(data) == before


def test_prepare_skip_bad_without_audio(data, tmp_path, capsys):
    "A recording without audio: refused naming it and the CLI flag; --skip-bad leaves it out (old: 'missing=' hint)."
    _no_audio(data)
    rc, out, err = run(['prepare', data, '--cache', tmp_path / 'cache', '--workers', 1, '--no-progress'], capsys)
    assert rc == 2 and '--skip-bad' in err and 'missing=' not in err
    rc, out, err = run(['prepare', data, '--cache', tmp_path / 'cache', '--workers', 1, '--no-progress', '--skip-bad'],
                       capsys)
    assert rc == 0, err


def test_prepare_accepts_upper_case_wav(data, tmp_path, capsys):
    "`X.WAV` is the audio of `X.txt` (old: ignored, then an error suggesting the library's missing='skip')."
    w = wav(data)
    w.rename(w.with_suffix('.WAV'))
    rc, out, err = run(['prepare', data, '--cache', tmp_path / 'cache', '--workers', 1, '--no-progress'], capsys)
    assert rc == 0, err
    assert 'missing=' not in err


@pytest.mark.parametrize('where', ['.', 'cache', AUDIO_DIR, f'{AUDIO_DIR}/cache'])
def test_prepare_cache_inside_dataset(where, data, capsys):
    before = checksums(data)
    cache = (data / where).resolve()
    rc, out, err = run(['prepare', data, '--cache', cache, '--workers', 1, '--no-progress'], capsys)
    msg = err.strip().splitlines()
    assert rc == 2 and len(msg) == 1 and str(cache) in msg[0], err
    assert 'inside the ICBHI data folder' in msg[0] or 'is the ICBHI data folder' in msg[0]
    assert checksums(data) == before


def test_prepare_flat_layout_cache_inside(data, tmp_path, capsys):
    "A flat folder (recordings and metadata side by side) is data too."
    flat = tmp_path / 'flat'
    flat.mkdir()
    for p in data.rglob('*'):
        if p.is_file(): shutil.copy(p, flat / p.name)
    before = checksums(flat)
    rc, out, err = run(['prepare', flat, '--cache', flat / 'features', '--no-progress'], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(flat) in err
    assert checksums(flat) == before


def test_prepare_data_folder_missing(tmp_path, capsys):
    rc, out, err = run(['prepare', tmp_path / 'nowhere', '--cache', tmp_path / 'cache'], capsys)
    assert rc == 2 and err.strip() == f'patchmix prepare: error: {tmp_path / "nowhere"}: ICBHI data folder not found'


# ------------------------------------------------------------------ synth

def test_synth_into_flat_dataset(data, tmp_path, capsys):
    "Old: exit 0 and the split and diagnosis files replaced."
    flat = tmp_path / 'flat'
    flat.mkdir()
    for p in data.rglob('*'):
        if p.is_file() and not p.name.startswith('.'): shutil.copy(p, flat / p.name)
    before = checksums(flat)
    rc, out, err = run(['synth', flat, '--recordings', 4], capsys)
    assert rc == 2 and err.strip().splitlines() == [f'patchmix synth: error: {flat} is not empty: synth writes only '
                                                    'into a new or empty folder']
    assert checksums(flat) == before


def test_synth_into_audio_folder(data, capsys):
    "Old: wrote into the full audio folder."
    before = checksums(data)
    rc, out, err = run(['synth', data / AUDIO_DIR, '--recordings', 4], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(data / AUDIO_DIR) in err
    assert checksums(data) == before


@pytest.mark.parametrize('sub', ['new', f'{AUDIO_DIR}/new'])
def test_synth_inside_dataset(sub, data, capsys):
    before = checksums(data)
    dest = data / sub
    rc, out, err = run(['synth', dest, '--recordings', 4], capsys)
    msg = err.strip().splitlines()
    assert rc == 2 and len(msg) == 1 and str(dest) in msg[0] and 'inside the ICBHI data folder' in msg[0], err
    assert not dest.exists() and checksums(data) == before


def test_synth_into_non_empty_folder(tmp_path, capsys):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'notes.md').write_text('mine')
    rc, out, err = run(['synth', tmp_path / 'out', '--recordings', 4], capsys)
    assert rc == 2 and str(tmp_path / 'out') in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['notes.md']


def test_synth_onto_a_file(tmp_path, capsys):
    (tmp_path / 'f').write_text('x')
    rc, out, err = run(['synth', tmp_path / 'f', '--recordings', 4], capsys)
    assert rc == 2 and str(tmp_path / 'f') in err and len(err.strip().splitlines()) == 1


def test_synth_into_empty_folder_works(tmp_path, capsys):
    (tmp_path / 'out').mkdir()
    rc, out, err = run(['synth', tmp_path / 'out', '--recordings', 4], capsys)
    assert rc == 0 and (tmp_path / 'out' / SPLIT_FILE).is_file()


# ------------------------------------------------------------------ stats

@pytest.mark.parametrize('case', ['duplicated-cycle', 'unknown-device', 'wav-800-Hz', 'split-bad-value'])
def test_stats_reports_problem_on_one_line(case, data, capsys):
    "stats is a report: exit 0, each refused recording on one line naming file (and line)."
    name = PREPARE_INDEX_CASES[case](data)
    before = checksums(data)
    rc, out, err = run(['stats', data], capsys)
    assert rc == 0
    hit = [l for l in out.splitlines() if name in l]
    assert len(hit) >= 1 and 'refused: 0 ' not in out, out
    assert checksums(data) == before


def test_stats_missing_folder_and_split(tmp_path, data, capsys):
    rc, out, err = run(['stats', tmp_path / 'nowhere'], capsys)
    assert rc == 2 and err.strip() == f'patchmix stats: error: {tmp_path / "nowhere"}: ICBHI data folder not found'
    rc, out, err = run(['stats', data, '--split', tmp_path / 'split.txt'], capsys)
    assert rc == 2 and err.strip() == f'patchmix stats: error: {tmp_path / "split.txt"}: split file not found'
