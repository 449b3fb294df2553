"Tests of patchmix_nb.features: batched fbank vs Kaldi, SpecAugment, the feature cache and FeatureDataset."
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from patchmix_nb.audio import load_cycles
from patchmix_nb.features import (FeatureDataset, SpecAugment, build_cache, cache_key, cache_manifest, fbank,
                                  kaldi_fbank, load_cache)
from patchmix_nb.icbhi import ICBHIError
from reference_pipeline import icbhi_dir, reference_fbank



# ---------------------------------------------------------------- fbank

def test_fbank_real_sample_equals_reference_fbank():
    d = icbhi_dir() / 'sample' / 'ICBHI_final_database'
    wavs = sorted(d.glob('*.wav')) if d.is_dir() else []
    if not wavs:
        pytest.skip(f'ICBHI sample not found under {d}')
    worst = 0.0
    for wav in wavs:
        rows = [l.split() for l in wav.with_suffix('.txt').read_text().splitlines() if l.strip()]
        cycles = [NS(start=float(r[0]), end=float(r[1])) for r in rows]
        ours = fbank(load_cycles(wav, cycles))
        ref = reference_fbank(wav, cycles)
        assert ours.shape == ref.shape == (len(cycles), 798, 128)
        worst = max(worst, (ours - ref).abs().max().item())
    print(f'max |batched - reference| over the sample: {worst:.3g}')
    assert worst <= 1e-3


def test_fbank_batched_equals_kaldi_random_and_edge_signals():
    g = torch.Generator().manual_seed(0)
    w = torch.cat([0.1 * torch.randn(3, 128000, generator=g),
                   torch.zeros(1, 128000),  # digital silence: log floor
                   torch.ones(1, 128000) * 0.5,  # DC only
                   torch.sin(torch.arange(128000) * 0.3)[None]])
    ours = fbank(w, chunk=4)
    ref = torch.stack([kaldi_fbank(x) for x in w])
    assert ours.shape == (6, 798, 128)
    assert (ours - ref).abs().max().item() <= 1e-3
    assert torch.equal(fbank(w, reference=True), ref)
    assert torch.equal(fbank(w[0]), fbank(w[:1]))  # 1-D input
    short = fbank(torch.randn(2, 16000))
    assert short.shape == (2, 98, 128)
    with pytest.raises(ValueError):
        fbank(torch.randn(2, 300))


# ---------------------------------------------------------------- SpecAugment

def test_specaugment_not_in_place_and_widths():
    x = torch.randn(2, 1, 798, 128)
    keep = x.clone()
    for upstream in (False, True):
        aug = SpecAugment(upstream=upstream, seed=0)
        for _ in range(50):
            y = aug(x)
            assert torch.equal(x, keep)
            assert y.shape == x.shape and y.data_ptr() != x.data_ptr()
            for axis, start, width in aug.last_masks:
                lim, size = (48, 128) if axis == 'mel' else (160, 798)
                assert 0 <= width <= lim - 1 and 0 <= start <= size - width


def test_specaugment_clean_fill_and_reproducible():
    x = torch.randn(1, 798, 128)
    aug = SpecAugment(seed=3)
    y = aug(x)
    assert len(aug.last_masks) == 4  # always applied
    changed = y != x
    assert torch.allclose(y[changed], torch.full_like(y[changed], x.mean().item()))
    mel = torch.zeros(128, dtype=torch.bool); time_ = torch.zeros(798, dtype=torch.bool)
    for axis, s, w in aug.last_masks:
        (mel if axis == 'mel' else time_)[s:s + w] = True
    expect = mel[None, None, :] | time_[None, :, None]
    assert torch.equal(changed, expect & (x != x.mean()))
    assert torch.equal(SpecAugment(seed=3)(x), y)
    z = SpecAugment(fill='zero', seed=3)(x)
    assert torch.equal(z[changed], torch.zeros_like(z[changed]))


def test_specaugment_upstream_gate_rate_and_time_fill():
    aug = SpecAugment(upstream=True, seed=123)
    n, hits = 4000, 0
    for _ in range(n):
        aug(torch.zeros(1, 200, 64))
        hits += bool(aug.last_masks)
    rate = hits / n
    assert abs(rate - 0.8413) < 4 * math.sqrt(0.8413 * 0.1587 / n), rate  # Φ(1), 4 σ
    # time-mask fill = mean after the frequency masks
    x = torch.arange(798 * 128, dtype=torch.float32).reshape(1, 798, 128) / 1e4
    for seed in range(30):
        a = SpecAugment(upstream=True, seed=seed)
        y = a(x)
        if not a.last_masks or not any(w for ax, _, w in a.last_masks if ax == 'time') \
                or not any(w for ax, _, w in a.last_masks if ax == 'mel'):
            continue
        after_freq = x.clone()
        for ax, s, w in a.last_masks:
            if ax == 'mel':
                after_freq[..., s:s + w] = x.mean()
        ax, s, w = next(m for m in a.last_masks if m[0] == 'time' and m[2])
        assert torch.allclose(y[0, s, 0], after_freq.mean(), atol=1e-5)
        break
    else:
        pytest.fail('no call with both masks')


# ---------------------------------------------------------------- cache

def make_set(root: Path, n: int = 4, seed: int = 0):
    "Tiny ICBHI-like set (4 kHz and 44.1 kHz) and an index with the contract's columns."
    rng = np.random.default_rng(seed)
    data = root / 'data'
    data.mkdir(parents=True, exist_ok=True)
    recs, cycs = [], []
    for i in range(n):
        sr = (4000, 44100)[i % 2]
        stem = f'{101 + i}_1b1_Al_sc_{("Litt3200", "AKGC417L")[i % 2]}'
        wav = data / f'{stem}.wav'
        sf.write(wav, (0.1 * rng.standard_normal(int(sr * (3 + i)))).astype(np.float32), sr,
                 subtype=('PCM_16', 'PCM_24')[i % 2])
        recs.append(dict(stem=stem, wav=str(wav), split=('train', 'test')[i % 2]))
        for c, (s, e) in enumerate([(0.1, 1.3), (1.3, 2.9)]):
            cycs.append(dict(stem=stem, cycle=c, start=s, end=e, crackle=c, wheeze=i % 2, split=recs[-1]['split']))
    return NS(recordings=pd.DataFrame(recs), cycles=pd.DataFrame(cycs))


def test_cache_build_reuse_invalidate(tmp_path):
    index = make_set(tmp_path)
    cache = build_cache(index, tmp_path / 'cache', workers=2)
    assert cache.features.shape == (8, 798, 128) and cache.features.dtype == np.float16
    assert cache.path.parent == (tmp_path / 'cache').resolve()
    assert sorted(p.name for p in cache.path.iterdir()) == ['cycles.csv', 'features.npy', 'manifest.json']
    assert cache.cycles[['stem', 'start', 'end']].equals(index.cycles[['stem', 'start', 'end']])
    # rows equal the pipeline run directly, recording by recording (float16 rounding)
    for r in index.recordings.itertuples():
        rows = np.flatnonzero(index.cycles.stem == r.stem)
        cyc = [NS(start=s, end=e) for s, e in zip(index.cycles.start[rows], index.cycles.end[rows])]
        direct = fbank(load_cycles(r.wav, cyc))
        got = torch.from_numpy(cache.features[rows].astype(np.float32))
        assert (got - direct).abs().max().item() <= 2 ** -11 * 2
    # reuse: same key, nothing rewritten
    mtime = (cache.path / 'features.npy').stat().st_mtime_ns
    again = build_cache(index, tmp_path / 'cache', workers=2)
    assert again.path == cache.path and (cache.path / 'features.npy').stat().st_mtime_ns == mtime
    # a parameter change -> new key
    assert build_cache(index, tmp_path / 'cache', workers=1, pad='zero').path != cache.path
    # a data file changes -> new key, rebuilt with the new content
    wav0 = Path(index.recordings.wav[0])
    x, sr = sf.read(str(wav0), dtype='float32')
    time.sleep(0.01)
    sf.write(wav0, x[::-1].copy(), sr, subtype='PCM_16')
    changed = build_cache(index, tmp_path / 'cache', workers=1)
    assert changed.path != cache.path
    assert not np.array_equal(changed.features[0], cache.features[0])
    np.testing.assert_array_equal(changed.features[2:], cache.features[2:])
    assert not any(p.name.startswith('.tmp') for p in (tmp_path / 'cache').iterdir())


def test_cache_workers_agree_and_float32(tmp_path):
    index = make_set(tmp_path)
    a = build_cache(index, tmp_path / 'c1', workers=1, dtype='float32')
    b = build_cache(index, tmp_path / 'c2', workers=2, dtype='float32')
    np.testing.assert_array_equal(np.asarray(a.features), np.asarray(b.features))
    h = build_cache(index, tmp_path / 'c1', workers=2)
    err = np.abs(np.asarray(h.features, np.float32) - np.asarray(a.features))
    assert a.features.dtype == np.float32 and h.path != a.path
    assert 0 < err.max() <= 2 ** -11 * max(2.0, float(np.abs(a.features).max()))


def test_cache_atomic_on_failure(tmp_path):
    index = make_set(tmp_path)
    bad = Path(index.recordings.wav[2])
    raw = bad.read_bytes()
    bad.write_bytes(raw[:len(raw) // 2])  # truncated: the build must fail, naming the file
    with pytest.raises(ICBHIError, match='truncated') as e:
        build_cache(index, tmp_path / 'cache', workers=2)
    assert bad.name in str(e.value)
    assert list((tmp_path / 'cache').iterdir()) == []  # no final folder, no temp leftovers
    # a stale temp folder of a crashed build is not mistaken for a cache
    bad.write_bytes(raw)
    key = cache_key(cache_manifest(index))
    stale = tmp_path / 'cache' / f'.tmp-{key}-crashed'
    stale.mkdir()
    (stale / 'features.npy').write_bytes(b'partial')
    cache = build_cache(index, tmp_path / 'cache', workers=1)
    assert cache.path.name == key and cache.features.shape == (8, 798, 128)


def test_cache_refuses_missing_audio_and_dataset_folder(tmp_path):
    index = make_set(tmp_path)
    recs = pd.concat([index.recordings, pd.DataFrame([dict(stem='999_1b1_Al_sc_Meditron', wav=None, split='train'),
                                                      dict(stem='998_1b1_Al_sc_Meditron', wav=str(tmp_path / 'gone.wav'),
                                                           split='train')])], ignore_index=True)
    cycs = pd.concat([index.cycles, pd.DataFrame([dict(stem='999_1b1_Al_sc_Meditron', cycle=0, start=0.0, end=1.0,
                                                       crackle=0, wheeze=0, split='train')])], ignore_index=True)
    bad = NS(recordings=recs, cycles=cycs)
    with pytest.raises(ICBHIError) as e:
        build_cache(bad, tmp_path / 'cache')
    assert '999_1b1_Al_sc_Meditron' in str(e.value) and '998_1b1_Al_sc_Meditron' in str(e.value)
    assert not (tmp_path / 'cache').exists()
    skipped = build_cache(bad, tmp_path / 'cache', workers=1, missing='skip')
    assert len(skipped) == 8 and set(skipped.manifest['skipped_no_audio']) == {'999_1b1_Al_sc_Meditron',
                                                                                  '998_1b1_Al_sc_Meditron'}
    with pytest.raises(ValueError, match='inside the (dataset|ICBHI data) folder'):
        build_cache(index, tmp_path / 'data' / 'cache')
    assert not (tmp_path / 'data' / 'cache').exists()


def test_load_cache_and_dataset(tmp_path):
    index = make_set(tmp_path)
    cache = build_cache(index, tmp_path / 'cache', workers=1)
    c2 = load_cache(cache.path)
    assert isinstance(c2.features, np.memmap) and not c2.features.flags.writeable
    assert json.loads((cache.path / 'manifest.json').read_text())['params']['pad'] == 'repeat'
    ds = FeatureDataset(c2, 'train')
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1]
    x, y, j = ds[1]
    assert x.shape == (1, 798, 128) and x.dtype == torch.float32 and (y, j) == (1, 1)
    x.fill_(99)  # a copy: the cache is untouched
    assert np.abs(c2.features[1].astype(np.float32)).max() < 99
    aug = FeatureDataset(c2, np.array([2, 3]), augment=SpecAugment(seed=0), n_cls=2)
    xa, ya, ja = aug[1]
    assert (ja, ya) == (3, 1) and not np.array_equal(xa[0].numpy(), c2.features[3].astype(np.float32))
    mask = np.zeros(8, bool); mask[[5, 7]] = True
    assert FeatureDataset(c2, mask).indices.tolist() == [5, 7]
    with pytest.raises(ValueError):
        FeatureDataset(c2, np.ones(3, bool))
    with pytest.raises(ICBHIError, match='not a feature cache'):
        load_cache(tmp_path)


# ---------------------------------------------------------------- keyed by content

def _synthetic_index(tmp_path):
    from patchmix_nb.dataset import load_index
    from patchmix_nb.synthetic import make_synthetic
    return make_synthetic(tmp_path / 'icbhi', recordings=4, seed=5)


def _edit_keeping_size_and_mtime(p: Path, edit) -> None:
    st = p.stat()
    data = p.read_bytes()
    new = edit(data)
    assert len(new) == len(data) and new != data
    p.write_bytes(new)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_annotation_edit_with_size_and_mtime_kept_is_seen(tmp_path):
    "Old key: size + mtime, so flipping a flag in place (same size and mtime) reused the old labels."
    from patchmix_nb.dataset import load_index
    data = _synthetic_index(tmp_path)
    index = load_index(data)
    first = build_cache(index, tmp_path / 'cache', workers=1)
    txt = Path(index.recordings.txt[0])
    lines = txt.read_text().splitlines()
    flags = lines[0].split('\t')
    flags[2] = '1' if flags[2] == '0' else '0'  # flip the crackle flag of cycle 0
    _edit_keeping_size_and_mtime(txt, lambda b: ('\n'.join(['\t'.join(flags)] + lines[1:]) + '\n').encode())
    index2 = load_index(data)
    second = build_cache(index2, tmp_path / 'cache', workers=1)
    assert second.path != first.path
    row = np.flatnonzero((second.cycles.stem == index2.recordings.stem[0]).to_numpy())[0]
    assert second.cycles.label[row] != first.cycles.label[row]
    assert second.cycles['label'].tolist() == index2.cycles['label'].tolist()  # labels: this run's annotations
    assert FeatureDataset(second).labels.tolist() == index2.cycles['label'].tolist()


def test_audio_edit_with_size_and_mtime_kept_is_seen(tmp_path):
    from patchmix_nb.dataset import load_index
    data = _synthetic_index(tmp_path)
    index = load_index(data)
    key = cache_key(cache_manifest(index))
    wav = Path(index.recordings.wav[1])
    _edit_keeping_size_and_mtime(wav, lambda b: b[:44] + bytes(255 - x for x in b[44:]))  # every sample changed
    assert cache_key(cache_manifest(load_index(data))) != key
    # the sample of the key: the header, and blocks spread over the file
    _edit_keeping_size_and_mtime(wav, lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:])  # one header byte
    assert cache_key(cache_manifest(load_index(data))) not in (key,)


def test_key_is_fast(tmp_path):
    "Hashing reads a sample of each wav: the manifest of a set costs a small fraction of its build."
    from patchmix_nb.dataset import load_index
    index = load_index(_synthetic_index(tmp_path))
    t = time.perf_counter()
    for _ in range(5): cache_manifest(index)
    per = (time.perf_counter() - t) / 5
    assert per < 0.05 * len(index.recordings), per  # < 50 ms per recording even on a busy machine (~1 ms quiet)
