"""Benchmark the feature cache on a full-size (synthetic) ICBHI set.

Prints: cache build time, cached reload time, cache size on disk, and a baseline measured in the same run (the
reference implementation's preparation: per-cycle kaldi.fbank in one process, float32), timed on a subset of
recordings and extrapolated to all cycles.

    python bench/prepare.py                      # generate a full-size synthetic set under --work, then measure
    python bench/prepare.py --data DIR           # use an existing ICBHI-layout folder instead
"""
from __future__ import annotations

import argparse
import math
import resource
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from patchmix_nb.features import FBANK_KWARGS, FBANK_MEAN, FBANK_STD, build_cache, load_cache
from patchmix_nb.icbhi import load_index


def make_noise_set(out: Path, recordings: int = 920, cycles: int = 6898, seed: int = 0) -> Path:
    "Fallback generator: noise wavs in the official layout (44.1 kHz 16/24/32-bit, a few 4 kHz), ~20 s, ~2.7 s cycles."
    rng = np.random.default_rng(seed)
    db = out / 'ICBHI_final_database'
    db.mkdir(parents=True, exist_ok=True)
    per = rng.multinomial(cycles - recordings, np.ones(recordings) / recordings) + 1  # >= 1 cycle each
    split = []
    for i in range(recordings):
        four_k = i % 15 == 0  # ~7 % Litt3200 recordings at 4 kHz
        dev = 'Litt3200' if four_k else ('AKGC417L', 'Meditron', 'LittC2SE')[i % 3]
        stem = f'{101 + i % 126}_{i // 126 + 1}b1_{("Al", "Ar", "Pl", "Pr", "Tc")[i % 5]}_sc_{dev}'
        sr = 4000 if four_k else 44100
        dur = np.clip(rng.gamma(4.0, 2.7 / 4.0, per[i]), 0.2, 16.0)
        starts = 0.05 + np.concatenate([[0], np.cumsum(dur)[:-1]])
        total = float(starts[-1] + dur[-1] + 0.2)
        n = int(total * sr)
        wave = (0.1 * rng.standard_normal(n) * (1 + np.sin(np.arange(n) * 2 * np.pi * 0.3 / sr))).astype(np.float32)
        sf.write(db / f'{stem}.wav', np.clip(wave, -1, 1), sr, subtype=('PCM_16', 'PCM_24', 'PCM_32')[i % 3])
        (db / f'{stem}.txt').write_text(''.join(f'{s:.3f}\t{s + d:.3f}\t{int(rng.random() < .3)}\t'
                                                f'{int(rng.random() < .15)}\n' for s, d in zip(starts, dur)))
        split.append(f'{stem}\t{"train" if i % 5 < 3 else "test"}\n')
    (out / 'ICBHI_challenge_train_test.txt').write_text(''.join(split))
    return out


def make_data(work: Path, recordings: int) -> Path:
    "A full-size synthetic ICBHI folder: patchmix_nb.synthetic when available, else noise wavs."
    out = work / f'synthetic-{recordings}'
    if (out / 'ICBHI_final_database').is_dir():
        return out
    tmp = Path(tempfile.mkdtemp(dir=work))
    try:
        from patchmix_nb.synthetic import make_synthetic
        root = Path(make_synthetic(tmp, recordings=recordings, seed=0, full=True))
        print(f'data: patchmix_nb.synthetic.make_synthetic(recordings={recordings}, full=True)')
    except ImportError:
        root = make_noise_set(tmp, recordings)
        print('data: noise wavs (patchmix_nb.synthetic not available)')
    os.rename(root if root == tmp else tmp, out)
    return out if root == tmp else out / root.relative_to(tmp)


def reference_prepare(index, n_recordings: int) -> tuple[float, int]:
    "The reference's preparation on the first recordings: per-recording Resample + Fade, per-cycle cut/pad + fbank."
    recs = index.recordings[index.recordings['wav'].notna()].head(n_recordings)
    sample_rate, target = 16000, 128000
    fade_out = torchaudio.transforms.Fade(fade_in_len=0, fade_out_len=1000, fade_shape='linear')
    t0, n, out = time.perf_counter(), 0, []
    for stem, wav in zip(recs['stem'], recs['wav']):
        data, sr = sf.read(wav, dtype='float32', always_2d=True)
        data = torch.from_numpy(data.T.copy())  # (1, N) as torchaudio.load returns it
        if sr != sample_rate:
            data = torchaudio.transforms.Resample(sr, sample_rate)(data)
        data = torchaudio.transforms.Fade(fade_in_len=1000, fade_out_len=1000, fade_shape='linear')(data)
        cyc = index.cycles[index.cycles['stem'] == stem]
        for start, end in zip(cyc['start'], cyc['end']):
            chunk = data[:, min(int(start * sample_rate), data.shape[1]):min(int(end * sample_rate), data.shape[1])]
            if chunk.shape[-1] > target:
                chunk = chunk[..., :target]
            else:
                chunk = fade_out(chunk.repeat(1, math.ceil(target / chunk.shape[-1]))[..., :target])
            f = torchaudio.compliance.kaldi.fbank(chunk, **FBANK_KWARGS)
            out.append(((f - FBANK_MEAN) / (FBANK_STD * 2)).unsqueeze(-1).numpy())
            n += 1
    return time.perf_counter() - t0, n


def du(path: Path) -> int:
    "Bytes allocated on disk under path."
    return sum(p.stat().st_blocks * 512 for p in path.rglob('*') if p.is_file())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', help='existing ICBHI-layout folder (default: generate a synthetic one)')
    ap.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'patchmix-bench'),
                    help='folder for generated data and caches (default: %(default)s)')
    ap.add_argument('--recordings', type=int, default=920)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--dtype', default='float16', choices=['float16', 'float32'])
    ap.add_argument('--ref-recordings', type=int, default=60, help='recordings timed for the reference baseline')
    ap.add_argument('--keep', action='store_true', help='keep the cache afterwards')
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = Path(a.data) if a.data else make_data(work, a.recordings)
    index = load_index(data)
    rec_ok = index.recordings['wav'].notna()
    print(f'index: {data} -> {int(rec_ok.sum())} recordings with audio, {len(index.cycles)} cycles '
          f'(mean {index.cycles.duration.mean():.2f} s), {len(index.problems)} problems '
          f'[{time.perf_counter() - t:.1f} s]')
    rates = index.recordings.get('sample_rate')
    if rates is not None:
        print('sample rates:', dict(rates.value_counts()))
    cache_dir = work / 'cache'
    shutil.rmtree(cache_dir, ignore_errors=True)
    print(f'machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads')

    load = os.getloadavg()[0]
    cpu0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t = time.perf_counter()
    cache = build_cache(index, cache_dir, workers=a.workers, dtype=a.dtype)
    build = time.perf_counter() - t
    cpu1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(b.ru_utime + b.ru_stime - a_.ru_utime - a_.ru_stime for a_, b in zip(cpu0, cpu1))
    n = len(cache)
    print(f'build:   {build:6.2f} s  for {n} cycles ({build / n * 1e3:.2f} ms/cycle, workers={a.workers}, '
          f'{a.dtype}); CPU {cpu:.1f} s (parent + workers); load average before: {load:.2f}  [target <= 10 s]')

    t = time.perf_counter()
    again = build_cache(index, cache_dir, workers=a.workers, dtype=a.dtype)
    reuse = time.perf_counter() - t
    t = time.perf_counter()
    opened = load_cache(again.path)
    reload = time.perf_counter() - t
    t = time.perf_counter()
    total = float(np.asarray(opened.features[::max(1, n // 200)], dtype=np.float32).sum())
    touch = time.perf_counter() - t
    print(f'reload:  {reuse:6.3f} s  build_cache() again (key check + open); load_cache() {reload:.3f} s; '
          f'reading 1/{max(1, n // 200)} of the rows {touch:.3f} s  [target <= 1 s]')
    size = du(cache.path)
    print(f'size:    {size / 1e9:6.3f} GB on disk ({cache.features.nbytes / 1e9:.3f} GB of features)  '
          f'[target <= 1.5 GB]')

    load = os.getloadavg()[0]
    t_ref, n_ref = reference_prepare(index, a.ref_recordings)
    est = t_ref / n_ref * n
    print(f'baseline (reference-style, 1 process, float32, {torch.get_num_threads()} torch threads): '
          f'{t_ref:.2f} s for {n_ref} cycles -> {est:.1f} s for {n} cycles (extrapolated); '
          f'build is {est / build:.1f}x faster (load average before: {load:.2f})')
    if not a.keep:
        shutil.rmtree(cache_dir, ignore_errors=True)
    del total
    return dict(build=build, reuse=reuse, reload=reload, size=size, reference=est, cycles=n)


if __name__ == '__main__':
    main()
