"""The docs build one notebook at a time against notebooks side by side (tools/docs.py --jobs): the same notebooks,
built twice in this run into temporary folders, with one cache ($PATCHMIX_HOME) warmed first so that neither build
pays for a synthetic set or a feature cache the other found.

    python bench/docs.py [--jobs N] [--only 00_core 03_audio ...]    # default: N = the cores (at most 4); 10 notebooks

Prints each build's seconds and their ratio. The seconds-long stand-in model is used (PATCHMIX_DEMO=smoke), so that
the ratio measures the notebooks side by side, not the course model's training (CI builds with the real model).
"""
import argparse, importlib.util, os, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('docs', ROOT / 'tools' / 'docs.py')
docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs)

DEFAULT = ['00_core', '03_audio', '04_features', '08_ast', '11_patchmix', '13_metrics', '16_data', '17_model',
           '20_inference', '22_hears']


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--jobs', type=int, default=docs.default_jobs())
    ap.add_argument('--only', nargs='+', default=DEFAULT)
    a = ap.parse_args()
    os.environ.setdefault('PATCHMIX_DEMO', 'smoke')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('PATCHMIX_HOME', str(Path(tempfile.mkdtemp()) / 'patchmix-home'))
    os.environ.pop('MPLBACKEND', None)
    quiet = lambda *_: None   # noqa: E731
    print(f"warming $PATCHMIX_HOME with one build of {len(a.only)} notebooks ...", flush=True)
    docs.build(Path(tempfile.mkdtemp()), a.only, a.jobs, log=quiet)
    secs = {}
    for jobs in (1, a.jobs):
        t = time.perf_counter()
        docs.build(Path(tempfile.mkdtemp()), a.only, jobs, log=quiet)
        secs[jobs] = time.perf_counter() - t
        print(f"{len(a.only)} notebooks, --jobs {jobs}: {secs[jobs]:.1f} s", flush=True)
    print(f"--jobs {a.jobs} / --jobs 1: {secs[a.jobs] / secs[1]:.2f} of the time ({os.cpu_count()} cores)")


if __name__ == '__main__':
    main()
