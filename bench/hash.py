"""The cost of keying the feature cache by every byte of the audio: sha256 (core.file_digest), sha1 and blake2b MB/s on
this CPU over the real ICBHI sample and synthetic files, the size of ICBHI's 920 recordings from the annotation
durations x sample rates x bit depths, and so the seconds a first `prepare` spends hashing (later ones reread
nothing: core.file_digests' memo).

    python bench/hash.py [ICBHI_DIR]      # default /work/shared/icbhi (annotations/ and sample/)
"""
import hashlib, os, sys, tempfile, time
from pathlib import Path

import soundfile as sf

from patchmix_nb.core import file_digest, file_digests

ICBHI = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('ICBHI_DIR', '/work/shared/icbhi'))
# sample rate of each ICBHI device as the real sample's headers say (Litt3200 at 4 kHz, the others at 44.1 kHz);
# the bit depth varies (16, 24 and 32-bit PCM in the sample), so the size is given at 16 and at 24 bit.
DEVICE_RATE = {'AKGC417L': 44100, 'Meditron': 44100, 'LittC2SE': 44100, 'Litt3200': 4000}


def rate(files, algo: str, reps: int = 3) -> float:
    "MB/s of `algo` over `files` (best of reps: the files are in the page cache after the first read)."
    size, best = sum(f.stat().st_size for f in files), float('inf')
    for _ in range(reps):
        t = time.perf_counter()
        for f in files:
            if algo == 'file_digest': file_digest(f)
            else:
                with open(f, 'rb') as h: hashlib.file_digest(h, algo)
        best = min(best, time.perf_counter() - t)
    return size / best / 1e6


def icbhi_bytes() -> tuple[float, int]:
    "(bytes, recordings) of ICBHI's audio estimated from the annotations: last cycle end x rate x 2 bytes + header."
    total, n = 0.0, 0
    for txt in sorted((ICBHI / 'annotations').glob('*.txt')):
        ends = [float(line.split()[1]) for line in txt.read_text().splitlines() if line.strip()]
        dev = txt.stem.rsplit('_', 1)[-1]
        total += max(ends, default=0) * DEVICE_RATE.get(dev, 44100) * 2 + 44          # 16 bit
        n += 1
    return total, n


def main() -> None:
    sample = sorted((ICBHI / 'sample').rglob('*.wav'))
    with tempfile.TemporaryDirectory() as tmp:
        synth = []
        for i, mb in enumerate((1, 4, 16, 64)):
            p = Path(tmp) / f"s{i}.wav"
            p.write_bytes(os.urandom(mb << 20))
            synth.append(p)
        for name, files in (('ICBHI sample', sample), ('synthetic', synth)):
            if not files: continue
            mb = sum(f.stat().st_size for f in files) / 1e6
            rates = {a: rate(files, a) for a in ('file_digest', 'sha256', 'sha1', 'blake2b')}
            print(f"{name}: {len(files)} files, {mb:.1f} MB | " + ', '.join(f"{a} {r:,.0f}" for a, r in rates.items())
                  + ' MB/s')
        b2 = rate(sample or synth, 'file_digest')                         # the rate the ICBHI figure uses
        t = time.perf_counter()
        file_digests(synth, Path(tmp) / 'memo.json')
        first = time.perf_counter() - t
        t = time.perf_counter()
        file_digests(synth, Path(tmp) / 'memo.json')
        print(f"file_digests over the synthetic files: {first * 1e3:.0f} ms, again (memo, files settled? "
              f"{(Path(tmp) / 'memo.json').exists()}): {(time.perf_counter() - t) * 1e3:.1f} ms")
    if sample:
        for f in sample:
            i = sf.info(f)
            print(f"  {f.name}: {i.samplerate} Hz {i.subtype}, {i.duration:.1f} s, {f.stat().st_size / 1e6:.2f} MB")
    if (ICBHI / 'annotations').is_dir():
        size, n = icbhi_bytes()
        print(f"ICBHI: {n} recordings, {size / 1e9:.2f} GB of audio at 16 bit, {1.5 * size / 1e9:.2f} GB at 24 bit "
              f"(last cycle end x device rate); file_digest at {b2:,.0f} MB/s: {size / 1e6 / b2:.1f}-"
              f"{1.5 * size / 1e6 / b2:.1f} s of hashing, once per changed file (a first `prepare` reads the audio "
              f"anyway; later ones reread nothing)")


if __name__ == '__main__':
    main()
