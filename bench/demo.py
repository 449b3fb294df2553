"""Benchmark: what one `cpu-demo` training epoch costs, the preset against a baseline setting, timed alternately in one run
(a script, not a test).

An epoch is timed as `train` runs it, by `train`'s own `train_epoch` on a learner from `setup_run`: the epoch's seeding,
learning rate and loader, `run_epoch` over every training batch of the synthetic demo set (`train_step` with the
preset's precision and fused passes), then `evaluate` on the validation split (`train_epoch`'s own timings, to 10 ms);
then the test split is scored and timed. The projected training time is `epochs x (train + val)` plus two test
evaluations (the selected epoch's and the last), which is what `train` does with `report_best_on_test=False`. The
baseline is the preset before 2026-11-29 (batch 16, lr 1e-3, 14 epochs, overlapping patches: stride 10); `--baseline
KEY=VALUE ...` sets another one.

What it measures is the compute per run, not what the run learns: the Score of each setting comes from training it
(`patchmix train --preset cpu-demo`, see bench/README.md).

Usage:
    python bench/demo.py                      # 2 alternating repetitions of one epoch each
    python bench/demo.py --reps 3 --json
    python bench/demo.py --baseline patch_stride=10     # the preset with overlapping patches
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch

from patchmix_nb.config import make_config, parse_value
from patchmix_nb.data import eval_loader, load_data
from patchmix_nb.devices import amp_dtype, resolve_device
from patchmix_nb.train import TrainingRun, evaluate, seed_everything, setup_run, train_epoch

BASELINE = dict(batch_size=16, lr=1e-3, epochs=14, patch_stride=10)   # cpu-demo until 2026-11-29: 346 s, Score 47.90


def time_epoch(cfg, data) -> dict:
    "Seconds of one training epoch (`train_epoch`: all batches, then validation) and of one test evaluation."
    cfg = replace(cfg, report_best_on_test=False)                          # the epoch scores validation only
    seed_everything(cfg.seed)                                              # as start_run, then its setup_run
    run = TrainingRun(cfg, None, data, setup_run(cfg, data=data), eval_loader(data, data.rows('val')),
                      eval_loader(data, data.rows('test')))                # no run folder: train_epoch writes nothing
    h = train_epoch(run, 1)                                                # train's epoch 1: seeding, lr, loader, val
    t0 = time.perf_counter()
    evaluate(run.learner.model, run.test_loader)
    return dict(train_s=h['seconds'], val_s=h['eval_seconds'], test_s=time.perf_counter() - t0,
                steps=len(h['steps']['loss']))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--reps', type=int, default=2, help='alternating repetitions (one epoch of each setting per repetition)')
    ap.add_argument('--baseline', nargs='*', default=None, metavar='KEY=VALUE',
                    help='the baseline as changes to the preset (default: the preset before 2026-11-29)')
    ap.add_argument('--json', action='store_true', help='also print one JSON line with all figures')
    a = ap.parse_args(argv)
    cur = make_config('cpu-demo', progress=False)
    base_changes = BASELINE if a.baseline is None else {k: v for k, v in (kv.split('=', 1) for kv in a.baseline)}
    base = make_config('cpu-demo', progress=False, **{k: parse_value(k, v)
                                                     for k, v in base_changes.items()})
    data = load_data(cur)                                                  # the same cache for both (same clips)
    precision = str(amp_dtype(resolve_device(cur.device), cur.precision) or 'float32').replace('torch.', '')
    load = os.getloadavg()[0]
    print(f"cpu-demo epoch: {len(data.rows('train'))} training, {len(data.rows('val'))} val, {len(data.rows('test'))} test "
          f"cycles; {precision}; {torch.get_num_threads()} threads; load average {load:.2f}")
    runs = {'baseline': [], 'cpu-demo': []}
    for r in range(a.reps):
        for name, cfg in (('baseline', base), ('cpu-demo', cur)):
            t = time_epoch(cfg, data)
            runs[name].append(t)
            print(f"  rep {r + 1} {name:8s}: train {t['train_s']:6.2f} s ({t['steps']} steps), val {t['val_s']:.2f} s, "
                  f"test {t['test_s']:.2f} s", flush=True)
    out = {'load_start': load, 'load_end': os.getloadavg()[0], 'precision': precision}
    for name, cfg in (('baseline', base), ('cpu-demo', cur)):
        med = {k: statistics.median(t[k] for t in runs[name]) for k in ('train_s', 'val_s', 'test_s')}
        total = cfg.epochs * (med['train_s'] + med['val_s']) + 2 * med['test_s']
        out[name] = dict(changes=base_changes if name == 'baseline' else {}, epochs=cfg.epochs, batch_size=cfg.batch_size,
                         patch_stride=cfg.patch_stride, **{k: round(v, 3) for k, v in med.items()},
                         projected_training_s=round(total, 1))
    ratio = out['cpu-demo']['projected_training_s'] / out['baseline']['projected_training_s']
    out['ratio'] = round(ratio, 3)
    for name in ('baseline', 'cpu-demo'):
        o = out[name]
        print(f"{name:8s}: {o['epochs']} epochs x (train {o['train_s']:.2f} s + val {o['val_s']:.2f} s) + 2 tests "
              f"-> {o['projected_training_s']:.0f} s of training (batch {o['batch_size']}, patch stride {o['patch_stride']})")
    print(f"cpu-demo / baseline: {ratio:.2f} ({1 / ratio:.2f}x faster); load average {out['load_end']:.2f} at the end")
    if a.json: print(json.dumps(out))
    return out


if __name__ == '__main__':
    main()
