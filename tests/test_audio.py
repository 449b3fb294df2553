"Tests of patchmix_nb.audio: reading, resampling, fades, cycle cutting and padding (real ICBHI sample when present)."
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from patchmix_nb.audio import (FADE_LEN, cut_pad, cycle_bounds, cycles_from_recording, fade, load_cycles,
                               load_recording, read_wav, resample)
from patchmix_nb.icbhi import ICBHIError
from reference_pipeline import icbhi_dir, reference_clips


def sample_wavs() -> list[Path]:
    d = icbhi_dir() / 'sample' / 'ICBHI_final_database'
    wavs = sorted(d.glob('*.wav')) if d.is_dir() else []
    if not wavs:
        pytest.skip(f'ICBHI sample not found under {d}')
    return wavs


def annotation(wav: Path) -> list:
    rows = [l.split() for l in wav.with_suffix('.txt').read_text().splitlines() if l.strip()]
    return [NS(start=float(r[0]), end=float(r[1])) for r in rows]


# ---------------------------------------------------------------- real data

def test_load_cycles_real_shapes_and_reference():
    for wav in sample_wavs():
        cycles = annotation(wav)
        clips = load_cycles(wav, cycles)
        assert clips.shape == (len(cycles), 128000), wav.name
        assert clips.dtype == torch.float32
        ref = reference_clips(wav, cycles)
        assert (clips - ref).abs().max().item() <= 1e-5, wav.name


def test_read_wav_matches_soundfile_all_bit_depths():
    subtypes = set()
    for wav in sample_wavs():
        x, sr = read_wav(wav)
        y, sr2 = sf.read(str(wav), dtype='float32')
        subtypes.add(sf.info(str(wav)).subtype)
        assert sr == sr2 and x.dtype == np.float32 and x.ndim == 1
        np.testing.assert_array_equal(x, y)
        assert np.abs(x).max() <= 1.0
    assert {'PCM_16', 'PCM_24', 'PCM_32'} <= subtypes


def test_truncated_real_wav_raises_naming_file(tmp_path):
    wav = sample_wavs()[0]
    raw = wav.read_bytes()
    bad = tmp_path / 'truncated_copy.wav'
    bad.write_bytes(raw[:len(raw) // 2 + 1])
    assert sf.info(str(bad)).frames > 0  # libsndfile alone would accept it
    with pytest.raises(ICBHIError, match='truncated') as e:
        read_wav(bad)
    assert 'truncated_copy.wav' in str(e.value) and e.value.path is not None


# ---------------------------------------------------------------- reading

def test_read_wav_bit_depths(tmp_path):
    x = np.array([0.0, 0.5, -1.0, 0.25, -0.125], dtype=np.float32)
    for st in ('PCM_16', 'PCM_24', 'PCM_32', 'FLOAT'):
        sf.write(tmp_path / f'{st}.wav', x, 8000, subtype=st)
        y, sr = read_wav(tmp_path / f'{st}.wav')
        assert sr == 8000
        np.testing.assert_array_equal(y, x)
    sf.write(tmp_path / 'q.wav', np.array([16384, -32768, 1], np.int16), 4000, subtype='PCM_16')
    assert read_wav(tmp_path / 'q.wav')[0].tolist() == [0.5, -1.0, 1 / 32768]


def test_read_wav_errors(tmp_path):
    sf.write(tmp_path / 'stereo.wav', np.zeros((100, 2), np.float32), 4000, subtype='PCM_16')
    with pytest.raises(ICBHIError, match='mono') as e:
        read_wav(tmp_path / 'stereo.wav')
    assert 'stereo.wav' in str(e.value)
    sf.write(tmp_path / 'empty.wav', np.zeros(0, np.float32), 4000, subtype='PCM_16')
    with pytest.raises(ICBHIError, match='empty') as e:
        read_wav(tmp_path / 'empty.wav')
    assert 'empty.wav' in str(e.value)
    (tmp_path / 'junk.wav').write_bytes(b'not a wav file at all' * 10)
    with pytest.raises(ICBHIError, match='unreadable') as e:
        read_wav(tmp_path / 'junk.wav')
    assert 'junk.wav' in str(e.value)
    with pytest.raises(ICBHIError, match='not found'):
        read_wav(tmp_path / 'absent.wav')
    sf.write(tmp_path / 'whole.wav', np.zeros(4000, np.float32), 4000, subtype='PCM_24')
    raw = (tmp_path / 'whole.wav').read_bytes()
    for cut in (len(raw) - 3, len(raw) // 2, 60):
        (tmp_path / 'cut.wav').write_bytes(raw[:cut])
        with pytest.raises(ICBHIError, match='truncated'):
            read_wav(tmp_path / 'cut.wav')
    nan = np.zeros(10, np.float32); nan[3] = np.nan
    sf.write(tmp_path / 'nan.wav', nan, 4000, subtype='FLOAT')
    with pytest.raises(ICBHIError, match='NaN'):
        read_wav(tmp_path / 'nan.wav')


def test_odd_sized_chunk_before_data_is_handled(tmp_path):
    "A RIFF file with an odd-sized LIST chunk (padded to even) before 'data' reads fine and is not 'truncated'."
    import struct
    pcm = np.array([1, -2, 3, 4000], np.int16).tobytes()
    fmt = struct.pack('<HHIIHH', 1, 1, 4000, 8000, 2, 16)
    lst = b'LIST' + struct.pack('<I', 5) + b'abcde' + b'\0'
    body = b'WAVE' + b'fmt ' + struct.pack('<I', 16) + fmt + lst + b'data' + struct.pack('<I', len(pcm)) + pcm
    (tmp_path / 'list.wav').write_bytes(b'RIFF' + struct.pack('<I', len(body)) + body)
    x, sr = read_wav(tmp_path / 'list.wav')
    assert sr == 4000 and x.tolist() == [1 / 32768, -2 / 32768, 3 / 32768, 4000 / 32768]


# ---------------------------------------------------------------- resampling

@pytest.mark.parametrize('sr', [44100, 4000, 10000, 22050, 48000, 8000])
def test_resample_matches_torchaudio(sr):
    x = torch.randn(sr * 2 + 123, generator=torch.Generator().manual_seed(sr)) * 0.2
    y = resample(x, sr, 16000)
    ref = torchaudio.transforms.Resample(sr, 16000)(x)
    assert y.shape == ref.shape
    assert (y - ref).abs().max().item() <= 1e-6
    assert torch.equal(resample(x, sr, 16000, reference=True), ref)


def test_resample_identity_returns_copy():
    x = torch.randn(100)
    y = resample(x, 16000, 16000)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()


# ---------------------------------------------------------------- fades and padding

def test_fade_exact_values():
    x = torch.ones(10000)
    f = fade(x)
    ramp = torch.linspace(0, 1, 1000)
    assert torch.equal(f[:1000], ramp) and torch.equal(f[-1000:], 1 - ramp)
    assert f[0].item() == 0.0 and f[-1].item() == 0.0 and f[999].item() == 1.0 and f[-1000].item() == 1.0
    assert abs(f[500].item() - 500 / 999) < 1e-7
    assert torch.equal(f[1000:-1000], x[1000:-1000])
    assert torch.equal(x, torch.ones(10000))  # not in place
    for L in (1000, 1500, 2000, 5000):
        w = torch.randn(2, L)
        assert torch.equal(fade(w), torchaudio.transforms.Fade(1000, 1000, 'linear')(w))
    with pytest.raises(ValueError):
        fade(torch.ones(999))


def test_cut_pad_exact_values():
    c = torch.tensor([1., 2., 3.])
    assert cut_pad(c, 8, 'repeat', fade_len=2).tolist() == [1, 2, 3, 1, 2, 3, 1, 0]
    assert cut_pad(c, 7, 'repeat', fade_len=3).tolist() == [1, 2, 3, 1, 2 * 1.0, 3 * 0.5, 0]
    assert cut_pad(c, 8, 'zero').tolist() == [0, 0, 1, 2, 3, 0, 0, 0]
    assert cut_pad(c, 3, 'zero').tolist() == [1, 2, 3]
    assert cut_pad(torch.arange(10.), 8, 'repeat', fade_len=2).tolist() == list(range(8))  # head crop, no fade
    assert cut_pad(torch.arange(10.), 8, 'zero').tolist() == list(range(8))
    assert cut_pad(torch.ones(8), 8, 'repeat', fade_len=2).tolist() == [1] * 7 + [0]  # exactly T: faded
    with pytest.raises(ValueError):
        cut_pad(c, 8, 'reflect')
    # full size: a 1.5 s cycle, tiled 6 times, fade-out = torchaudio's
    chunk = torch.randn(24000)
    out = cut_pad(chunk, 128000)
    tiled = chunk.repeat(6)[:128000]
    assert torch.equal(out[:-1000], tiled[:-1000])
    assert torch.equal(out, torchaudio.transforms.Fade(0, 1000, 'linear')(tiled[None])[0])
    exact = torch.randn(128000)
    assert torch.equal(cut_pad(exact, 128000), torchaudio.transforms.Fade(0, 1000, 'linear')(exact[None])[0])


def test_cycle_bounds_truncate_and_clip():
    assert cycle_bounds(0.036, 0.579, 10 ** 6) == (int(0.036 * 16000), int(0.579 * 16000))
    assert cycle_bounds(1.0, 5.0, 40000) == (16000, 40000)
    assert cycle_bounds(3.0, 5.0, 40000) == (40000, 40000)


def test_cycles_from_recording_padding_modes_and_empty_cycle(tmp_path):
    rec = torch.randn(48000)
    cyc = [NS(start=0.5, end=1.0), NS(start=0.0, end=2.9), NS(start=2.0, end=12.0)]
    rep = cycles_from_recording(rec, cyc)
    zer = cycles_from_recording(rec, cyc, pad='zero')
    assert rep.shape == zer.shape == (3, 128000)
    assert torch.equal(rep[0, :8000], rec[8000:16000]) and torch.equal(rep[0, 8000:16000], rec[8000:16000])
    off = (128000 - 8000) // 2
    assert torch.equal(zer[0, off:off + 8000], rec[8000:16000]) and zer[0, :off].abs().sum() == 0
    assert torch.equal(rep[2, :16000], rec[32000:48000])  # end clipped to the recording
    with pytest.raises(ICBHIError, match='empty'):
        cycles_from_recording(rec, [NS(start=3.5, end=4.0)], path='x.wav')


def test_load_recording_and_cycles_synthetic(tmp_path):
    x = (0.2 * np.random.default_rng(0).standard_normal(4000 * 5)).astype(np.float32)
    sf.write(tmp_path / 'r.wav', x, 4000, subtype='PCM_16')
    rec = load_recording(tmp_path / 'r.wav')
    y, _ = sf.read(str(tmp_path / 'r.wav'), dtype='float32')
    ref = torchaudio.transforms.Fade(1000, 1000)(torchaudio.transforms.Resample(4000, 16000)(torch.from_numpy(y)))
    assert rec.shape == (80000,) and (rec - ref).abs().max() <= 1e-6
    clips = load_cycles(tmp_path / 'r.wav', [NS(start=0.2, end=1.1), NS(start=1.1, end=4.9)], pad='zero')
    assert clips.shape == (2, 128000)
    with pytest.raises(ValueError):
        load_cycles(tmp_path / 'r.wav', [NS(start=0.2, end=1.1)], pad='mirror')


def test_spectrogram_display():
    "One display for every spectrogram: seconds, Hz ticks on the mel scale, one colormap, a colorbar, padding shaded."
    import matplotlib
    from matplotlib.figure import Figure
    from patchmix_nb.audio import SPEC_CMAP, log_mel, mel_bin_of_hz, plot_spectrogram, show_spectrogram
    from patchmix_nb.features import FBANK_MEAN, FBANK_STD, kaldi_fbank
    g = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(16000, generator=g)
    # log_mel is the fbank of 04_features before its normalisation; any rate is resampled to 16 kHz first
    np.testing.assert_allclose(((log_mel(wave) - FBANK_MEAN) / (2 * FBANK_STD)).numpy(), kaldi_fbank(wave).numpy(),
                               atol=1e-5)
    assert log_mel(torch.randn(8000, generator=g), 8000).shape == (98, 128)
    with pytest.raises(ValueError, match='shorter than one 25 ms frame'): log_mel(torch.ones(100))
    spec = log_mel(wave)  # (98, 128): 1 s
    fig = plot_spectrogram(spec, 'one second', pad_from=0.6)
    ax, cbar = fig.axes
    im, = ax.images
    assert im.get_extent() == pytest.approx([0, 0.98, 0, 128]) and im.get_cmap().name == SPEC_CMAP
    assert ax.get_xlabel() == 'time (s)' and ax.get_ylabel() == 'frequency (Hz)'
    ticks = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks()))
    assert ticks['1k'] == pytest.approx(mel_bin_of_hz(1000)) and '4k' in ticks  # Hz at their mel positions
    pad, = [p for p in ax.patches if p.get_gid() == 'padding']
    assert pad.get_x() == pytest.approx(0.6) and pad.get_width() == pytest.approx(0.38)
    assert cbar.get_ylabel() == 'log-mel (normalised)' and ax.get_title() == 'one second'
    assert ax.title.get_fontsize() >= 9  # readable
    # no padding, no colorbar; a shared colorbar beside several panels; an Axes to draw it in
    fig2 = Figure()
    a, b, c = fig2.subplots(1, 3)
    show_spectrogram(a, spec, colorbar=False)
    show_spectrogram(b, spec, colorbar=[a, b], pad_from=5.0)  # padding past the end: nothing shaded
    show_spectrogram(c, spec.numpy(), colorbar=fig2.add_axes([0.9, 0.1, 0.02, 0.8]), label='dB')
    assert len(fig2.axes) == 5 and not [p for p in b.patches if p.get_gid() == 'padding']
    assert fig2.axes[-1].get_ylabel() == 'dB'
    with pytest.raises(ValueError, match='expected a \\(frames, mel bins\\) spectrogram'):
        show_spectrogram(a, torch.zeros(2, 3, 4))
    assert isinstance(matplotlib.colormaps[SPEC_CMAP], matplotlib.colors.Colormap)
