"""Benchmark the feature cache on a full-size (synthetic) ICBHI set.

Prints: cache build time, cached reload time, cache size on disk, and baselines measured in the same run:
  * the old code (`--baseline REV`, default 489e795: patchmix_nb's icbhi/audio/features at that commit, loaded from
    git), built on the same index alternately with the current code (`--repeats`), wall and CPU seconds;
  * the reference implementation's preparation (per-cycle kaldi.fbank in one process, float32), timed on a subset of
    recordings and extrapolated to all cycles;
  * a per-stage CPU profile of the worker's pipeline in one process (`--profile-recordings`): key hashing, read,
    resample, fade, cut/pad, the fbank's parts, the float16 cast and the row writes, in ms per cycle, with the floor
    it sets for `workers` processes.
On a shared machine compare the ratios and CPU seconds, not the absolute wall times.

    python bench/prepare.py                      # generate a full-size synthetic set under --work, then measure
    python bench/prepare.py --data DIR           # use an existing ICBHI-layout folder instead
    python bench/prepare.py --limit 150 --ref-recordings 0   # a quick look: first 150 recordings, no reference
"""
from __future__ import annotations

import argparse
import importlib
import math
import resource
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import soundfile as sf
import torch
import torchaudio

from patchmix_nb.features import FBANK_KWARGS, FBANK_MEAN, FBANK_STD, build_cache, load_cache
from patchmix_nb.dataset import load_index


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


def load_old(rev: str, work: Path):
    "patchmix_nb's icbhi, audio and features modules at git revision `rev`, as package `pm_<rev>` (None if unavailable)."
    repo = Path(__file__).resolve().parents[1]
    pkg = work / f'pm_{rev}'
    try:
        pkg.mkdir(parents=True, exist_ok=True)
        for m in ('icbhi', 'audio', 'features'):
            src = subprocess.run(['git', '-C', str(repo), 'show', f'{rev}:patchmix_nb/{m}.py'], capture_output=True,
                                 text=True, check=True).stdout
            (pkg / f'{m}.py').write_text(src.replace('from patchmix_nb.', 'from .'))
        (pkg / '__init__.py').write_text('')
    except (OSError, subprocess.CalledProcessError) as e:
        print(f'baseline {rev}: not available ({e})')
        return None
    sys.path.insert(0, str(work))
    return importlib.import_module(f'pm_{rev}.features')


def cpu_now() -> float:
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed_build(build, index, cache_dir: Path, **kw) -> tuple[float, float]:
    "(wall s, CPU s of this process and its workers) of one build into an empty cache_dir."
    shutil.rmtree(cache_dir, ignore_errors=True)
    c0, t0 = cpu_now(), time.perf_counter()
    build(index, cache_dir, **kw)
    wall, cpu = time.perf_counter() - t0, cpu_now() - c0
    shutil.rmtree(cache_dir, ignore_errors=True)
    return wall, cpu


def stage_profile(index, n_recordings: int, dtype: str = 'float16') -> dict:
    "CPU ms per cycle of each stage of the worker's pipeline, in this process with 1 torch thread."
    from patchmix_nb import features as F
    from patchmix_nb.audio import read_wav, resample, fade, cycles_from_recording
    recs = index.recordings[index.recordings['wav'].notna()].head(n_recordings)
    sub = NS(recordings=recs, cycles=index.cycles[index.cycles['stem'].isin(recs['stem'])].reset_index(drop=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    st = dict.fromkeys(['key (hash)', 'read', 'resample', 'fade', 'cut/pad', 'fbank: framing', 'fbank: rfft',
                        'fbank: power+mel', 'fbank: log', 'cast', 'write'], 0.0)
    clock = time.thread_time
    t = clock(); F.cache_manifest(sub); st['key (hash)'] += clock() - t
    _, tasks, _ = F._plan(sub)
    win, plan = F._mel_plan()
    out = tempfile.TemporaryFile()
    n, bufs = 0, {}
    for wav, rows, starts, ends in tasks:
        t0 = clock(); x, sr = read_wav(wav)
        t1 = clock(); y = resample(x, sr, 16000)
        t2 = clock(); y = fade(y, 1000, 1000)
        t3 = clock(); clips = cycles_from_recording(y, [F._Span(a, b) for a, b in zip(starts, ends)])
        t4 = clock()
        st['read'] += t1 - t0; st['resample'] += t2 - t1; st['fade'] += t3 - t2; st['cut/pad'] += t4 - t3
        feats = []
        for i in range(0, len(clips), 4):  # fbank's chunks, stage by stage (same ops as features._fbank_chunk)
            w = clips[i:i + 4].contiguous(); k, L = w.shape; Fr = F.n_frames(L)
            a = clock()
            if bufs.get('key') != (k, Fr): bufs.update(key=(k, Fr), buf=torch.zeros(k, Fr, 512))  # reused, as in fbank
            buf = bufs['buf']; fr = w.unfold(-1, 400, 160); b = buf[..., :400]
            torch.sub(fr[..., 1:], fr[..., :-1], alpha=0.97, out=b[..., 1:]); torch.mul(fr[..., 0], 0.03, out=b[..., 0])
            b.sub_(fr.mean(-1, keepdim=True), alpha=0.03); b.mul_(win)
            b_ = clock(); spec = torch.view_as_real(torch.fft.rfft(buf))
            c = clock(); p2 = spec.square_().view(k * Fr, 514); o = torch.empty(k * Fr, F.N_MELS)
            for c0, c1, lo, hi, m in plan: torch.mm(p2[:, lo:hi], m, out=o[:, c0:c1])
            d = clock(); o = o.clamp_min_(1.1920929e-07).log_().sub_(F.FBANK_MEAN).div_(F.FBANK_STD * 2)
            e = clock(); f16 = o.to(getattr(torch, dtype)).numpy()
            f_ = clock(); os.pwrite(out.fileno(), f16, 0)
            g = clock()
            st['fbank: framing'] += b_ - a; st['fbank: rfft'] += c - b_; st['fbank: power+mel'] += d - c
            st['fbank: log'] += e - d; st['cast'] += f_ - e; st['write'] += g - f_
        n += len(rows)
    torch.set_num_threads(threads)
    return dict(cycles=n, ms_per_cycle={k: v / n * 1e3 for k, v in st.items()})


def du(path: Path) -> int:
    "Bytes allocated on disk under path."
    return sum(p.stat().st_blocks * 512 for p in path.rglob('*') if p.is_file())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', help='existing ICBHI-layout folder (default: generate a synthetic one)')
    ap.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'patchmix-bench'),
                    help='folder for generated data and caches (default: %(default)s)')
    ap.add_argument('--recordings', type=int, default=920)
    ap.add_argument('--limit', type=int, help='use only the first LIMIT recordings of the set')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--dtype', default='float16', choices=['float16', 'float32'])
    ap.add_argument('--baseline', default='489e795', help="git revision of the old code ('' to skip)")
    ap.add_argument('--repeats', type=int, default=2, help='old/new builds, alternated')
    ap.add_argument('--profile-recordings', type=int, default=60, help='recordings of the per-stage profile (0: skip)')
    ap.add_argument('--ref-recordings', type=int, default=60, help='recordings timed for the reference baseline (0: skip)')
    ap.add_argument('--keep', action='store_true', help='keep the cache afterwards')
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = Path(a.data) if a.data else make_data(work, a.recordings)
    index = load_index(data)
    if a.limit:
        rec = index.recordings.head(a.limit)
        index = NS(recordings=rec, cycles=index.cycles[index.cycles['stem'].isin(rec['stem'])].reset_index(drop=True),
                   problems=index.problems)
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
    c0 = cpu_now()
    t = time.perf_counter()
    cache = build_cache(index, cache_dir, workers=a.workers, dtype=a.dtype)
    build = time.perf_counter() - t
    cpu = cpu_now() - c0
    n = len(cache)
    print(f'build:   {build:6.2f} s  for {n} cycles ({build / n * 1e3:.2f} ms/cycle, workers={a.workers}, '
          f'{a.dtype}); CPU {cpu:.1f} s (parent + workers); load average before: {load:.2f}  [target <= 6 s quiet]')

    t = time.perf_counter()
    again = build_cache(index, cache_dir, workers=a.workers, dtype=a.dtype)
    reuse = time.perf_counter() - t
    t = time.perf_counter()
    opened = load_cache(again.path)
    reload = time.perf_counter() - t
    t = time.perf_counter()
    total = float(np.asarray(opened.features[::max(1, n // 200)], dtype=np.float32).sum())
    touch = time.perf_counter() - t
    print(f'reload:  {reuse:6.3f} s  build_cache() again (content key + checks + open); load_cache() {reload:.3f} s; '
          f'reading 1/{max(1, n // 200)} of the rows {touch:.3f} s  [target <= 1 s]')
    size = du(cache.path)
    print(f'size:    {size / 1e9:6.3f} GB on disk ({cache.features.nbytes / 1e9:.3f} GB of features)  '
          f'[target <= 1.5 GB]')
    if not a.keep:
        shutil.rmtree(cache_dir, ignore_errors=True)

    out = dict(build=build, build_cpu=cpu, reuse=reuse, reload=reload, size=size, cycles=n)
    old = load_old(a.baseline, work) if a.baseline else None
    if old is not None and a.repeats > 0:
        runs = {'old': [], 'new': []}
        pair = [('old', old.build_cache), ('new', build_cache)]
        for r in range(a.repeats):  # alternated (old-new, new-old, ...), so both see the same machine
            for name, fn in (pair if r % 2 == 0 else pair[::-1]):
                runs[name].append(timed_build(fn, index, work / f'cache-{name}', workers=a.workers, dtype=a.dtype))
        med = {k: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v]))) for k, v in runs.items()}
        best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
        print(f'old code ({a.baseline}) vs now, {a.repeats}x alternated, median: wall {med["old"][0]:.2f} s -> '
              f'{med["new"][0]:.2f} s ({med["old"][0] / med["new"][0]:.2f}x), CPU {med["old"][1]:.1f} s -> '
              f'{med["new"][1]:.1f} s ({med["old"][1] / med["new"][1]:.2f}x); best: wall {best["old"][0]:.2f} s -> '
              f'{best["new"][0]:.2f} s ({best["old"][0] / best["new"][0]:.2f}x), CPU {best["old"][1]:.1f} s -> '
              f'{best["new"][1]:.1f} s ({best["old"][1] / best["new"][1]:.2f}x); all runs (wall, CPU): '
              + '; '.join(f'{k} ' + ', '.join(f'({w:.1f}, {c:.1f})' for w, c in v) for k, v in runs.items()))
        out['old_vs_new'] = dict(median=med, best=best, runs=runs)

    if a.profile_recordings:
        prof = stage_profile(index, a.profile_recordings, a.dtype)
        ms = prof['ms_per_cycle']
        tot = sum(ms.values())
        print(f'profile: CPU ms per cycle over {prof["cycles"]} cycles of {a.profile_recordings} recordings '
              f'(1 process, 1 thread): ' + ', '.join(f'{k} {v:.3f} ({v / tot:.0%})' for k, v in ms.items())
              + f'; total {tot:.3f} ms -> floor {tot * n / 1e3 / max(1, a.workers):.1f} s for {n} cycles on '
              f'{a.workers} cores')
        out['profile'] = prof

    if a.ref_recordings:
        load = os.getloadavg()[0]
        t_ref, n_ref = reference_prepare(index, a.ref_recordings)
        est = t_ref / n_ref * n
        print(f'baseline (reference-style, 1 process, float32, {torch.get_num_threads()} torch threads): '
              f'{t_ref:.2f} s for {n_ref} cycles -> {est:.1f} s for {n} cycles (extrapolated); '
              f'build is {est / build:.1f}x faster (load average before: {load:.2f})')
        out['reference'] = est
    del total
    return out


if __name__ == '__main__':
    main()
