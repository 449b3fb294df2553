"""Benchmark: training throughput from the feature cache, data loading included (a script, not a test).

What is timed is one step of `patchmix_nb.train.train`'s inner loop, run by the trainer itself (no copy of it):
`setup_run` builds the model, Adam, scaler and ma_update; `prepare_epoch` gives epoch 1, 2, ... its own seeding,
SpecAugment, Patch-Mix draws, learning rate and loader, and `run_epoch` trains it (nothing is evaluated):

    batches = train_loader(data, batch_size, seed)        float16 memmap -> float32, (B, 1, T, F)
    x = SpecAugment(upstream=...)(x)                      masked copy
    loss, logs = learner.step(x.to(device), y.to(device)) train_step: ma snapshot, forward under the run's autocast
    loss.item()                                           (the model scales x itself), backward, Adam, ma blend

Precisions: fp32, and bf16 autocast where the processor has native bf16 (detected at run time; `--precisions`).

Each step is split into `data` (from the end of the previous step to the step call: next batch from the DataLoader,
SpecAugment, copy to the device and `run_epoch`'s bookkeeping; the epoch's setup too for the first step of an epoch)
and `compute` (from the step call to loss.item()); the learner's step is wrapped to time it. Reported: median step
time over the timed steps (after warm-up), samples/s, the data share of the step, and (from
`torch.utils.flop_counter.FlopCounterMode` on the first warm-up step) the achieved GFLOP/s against this machine's
matmul peak of the same dtype, measured in the same run, as bench/step.py does. Also the data-only throughput:
samples/s through the same epochs with the model's step skipped (`--data-passes` epochs over the training rows), to
show that loading is not the bottleneck; SpecAugment's share of it is timed around each of its calls.

Usage:
    python bench/train.py                                    # synthetic set, 8 s clips; ast-tiny @ 8, ast-base @ 2
    python bench/train.py --methods patchmix_cl ce --steps 4 --json
    python bench/train.py --data /path/to/ICBHI --models ast-tiny --batch 8 --duration 4

The default run takes about 2-3 minutes on the 2-core CPU (one ast-base step is ~20 s there). On a shared VM other
processes compete for the cores: the load average is printed at start and end; timings under load are pessimistic.
On a CUDA GPU it also runs ast-base at batch 8 under bf16 autocast and reports samples/s and TFLOP/s.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch
from torch.utils import flop_counter as fc

from patchmix_nb.config import make_config
from patchmix_nb.data import load_data
from patchmix_nb.devices import cpu_bf16_native
from patchmix_nb.model import STEPS
from patchmix_nb.train import Learner, prepare_epoch, run_epoch, seed_everything, setup_run


# ---------------------------------------------------------------------------------------------------------------- helpers
from step import _custom_mapping, _sync, finish, matmul_peak   # bench/step.py: peak measurement and CPU attention FLOPs


class TimedLearner(Learner):
    """`setup_run`'s learner with its step timed where `run_epoch` calls it. A step's `data` time runs from the end of
    the previous step (or the start of its epoch) to the call: the next batch, SpecAugment, the copy to the device and
    `run_epoch`'s bookkeeping. Its `compute` time is `train_step` through loss.item(). `compute=False` skips the step
    (the data-only pass); `counter` (a FlopCounterMode) counts the next step."""
    @classmethod
    def of(cls, learner: Learner, compute: bool = True) -> 'TimedLearner':
        t = cls(learner.model, learner.optimizer, learner.scaler, learner.ma, learner.runner)
        t.compute, t.counter, t.flops, t.records, t.last = compute, None, (None, {}), [], None
        return t

    def step(self, x, y):
        dev = x.device
        _sync(dev)
        t1 = time.perf_counter()
        loss, logs, value = torch.zeros((), device=dev), {}, float('nan')
        if self.compute:
            counter, self.counter = self.counter, None
            try:
                with counter or contextlib.nullcontext():
                    loss, logs = super().step(x, y)                         # the trainer's own train_step
                    value = loss.item()
            except Exception as e:                                          # figures without FLOPs, not a crash
                if counter is None: raise
                print(f'  FlopCounterMode failed ({type(e).__name__}: {e}); no FLOP/s figure', file=sys.stderr)
                loss, logs = super().step(x, y)
                value = loss.item()
            if counter is not None and counter.get_total_flops():
                self.flops = (int(counter.get_total_flops()),
                              {str(k): int(v) for k, v in counter.get_flop_counts().get('Global', {}).items()})
        _sync(dev)
        t2 = time.perf_counter()
        self.records.append((t1 - self.last, t2 - t1, value, len(x)))
        self.last = t2
        return loss, logs


def train_steps(cfg, data, lrn: 'TimedLearner', steps: int | None = None, epochs: int | None = None,
                aug_times: list | None = None) -> None:
    """`train`'s epochs from epoch 1 (`prepare_epoch`: its seeding, SpecAugment, Patch-Mix draws, lr and loader; then
    `run_epoch`) until the learner has taken `steps` steps, or for `epochs` whole epochs. Nothing is evaluated.
    `aug_times` receives the seconds of every SpecAugment call."""
    epoch = 0
    while (len(lrn.records) < steps) if steps is not None else (epoch < epochs):
        epoch += 1
        lrn.last = time.perf_counter()
        _, augment, batches = prepare_epoch(cfg, data, lrn, epoch)
        if augment is not None and aug_times is not None: augment = timed(augment, aug_times)
        run_epoch(lrn, batches, augment, None if steps is None else steps - len(lrn.records), epoch)


def timed_learner(data, cfg, device, compute: bool = True) -> 'TimedLearner':
    "The learner of `cfg` on `data`, set up as `train` sets it up (seed, then `setup_run`), its steps timed."
    seed_everything(cfg.seed)                                               # as start_run, then its setup_run
    return TimedLearner.of(setup_run(cfg, device=device, data=data), compute)


def timed(fn, into: list):
    "`fn`, with the seconds of every call appended to `into`."
    def call(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        into.append(time.perf_counter() - t0)
        return out
    return call


# ---------------------------------------------------------------------------------------------------------------- data only
def bench_data(data, cfg, device, passes: int = 1) -> dict:
    "Samples/s through DataLoader + SpecAugment (+ copy to device), no model step: `passes` epochs of `train_epoch`."
    lrn, aug = timed_learner(data, cfg, device, compute=False), []
    t_start = time.perf_counter()
    train_steps(cfg, data, lrn, epochs=passes, aug_times=aug)
    wall = time.perf_counter() - t_start
    rec = lrn.records
    n, t_data, t_aug = sum(r[3] for r in rec), sum(r[0] for r in rec), sum(aug)
    return dict(batch=cfg.batch_size, samples=n, wall_s=wall, samples_per_s=n / wall if wall else None,
                load_s=t_data - t_aug, specaug_s=t_aug, ms_per_sample=1e3 * wall / n if n else None,
                specaug=cfg.specaug, shape=list(data.cache.features.shape[1:]), dtype=str(data.cache.features.dtype))


# ---------------------------------------------------------------------------------------------------------------- training
def bench_train(data, model: str, method: str, batch: int, steps: int, warmup: int, device: torch.device,
                specaug: str, duration: float, data_dir, precision: str = 'fp32',
                peak: float | None = None) -> dict:
    "Warm-up steps (the first FLOP-counted), then `steps` timed steps of `train`'s own epochs; medians and shares."
    cfg = make_config(model=model, method=method, batch_size=batch, duration=duration, specaug=specaug,
                      data_dir=data_dir, device=device.type, precision=precision, progress=False)
    rows = data.rows('train')
    if len(rows) < batch:
        raise ValueError(f'{data.data_dir}: {len(rows)} training cycles, fewer than one batch of {batch}')
    lrn = timed_learner(data, cfg, device)
    if warmup > 0: lrn.counter = fc.FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    train_steps(cfg, data, lrn, steps=warmup + steps)
    flops, per_op = lrn.flops
    timed = lrn.records[warmup:]
    d = [t[0] for t in timed]
    c = [t[1] for t in timed]
    tot = [t[0] + t[1] for t in timed]
    med = statistics.median(tot)
    dt = lrn.model.amp_dtype
    r = dict(model=model, method=method, batch=batch, device=str(device), precision=precision,
             dtype=str(dt).replace('torch.', '') + '-autocast' if dt else 'float32', specaug=specaug,
             params=sum(p.numel() for p in lrn.model.parameters()), warmup=warmup, steps=steps,
             step_s=[round(t, 4) for t in tot], data_s=[round(t, 4) for t in d], compute_s=[round(t, 4) for t in c],
             median_step_s=med, median_data_s=statistics.median(d), median_compute_s=statistics.median(c),
             samples_per_s=batch / med, data_share=sum(d) / sum(tot), flops_per_step=flops,
             losses=[round(t[2], 4) for t in timed])
    r['achieved_flops'] = flops / med if flops else None
    r['fraction_of_peak'] = r['achieved_flops'] / peak if flops and peak else None
    del lrn
    return r


# ---------------------------------------------------------------------------------------------------------------- main
def _fmt(r: dict) -> str:
    s = (f'{r["model"]:9s} {r["method"]:12s} batch {r["batch"]:2d} {r["dtype"]}: {r["samples_per_s"]:7.2f} samples/s; '
         f'step median {r["median_step_s"]:.3f} s = data {r["median_data_s"] * 1e3:.1f} ms + compute '
         f'{r["median_compute_s"]:.3f} s; data + SpecAugment {100 * r["data_share"]:.2f} % of step time')
    s += f'\n          steps (s): {", ".join(f"{t:.3f}" for t in r["step_s"])}'
    if r['flops_per_step']:
        s += f'; {r["flops_per_step"] / 1e9:.1f} GFLOP/step (counter), {r["achieved_flops"] / 1e9:.1f} GFLOP/s'
        if r['fraction_of_peak']: s += f' = {100 * r["fraction_of_peak"]:.1f} % of matmul peak'
    return s


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=None, help='ICBHI-layout folder (default: the embedded synthetic set)')
    ap.add_argument('--cache', default=None, help='feature-cache folder (default: $PATCHMIX_HOME/cache)')
    ap.add_argument('--duration', type=float, default=8.0, help='seconds per clip (8 s = 798 frames, the paper)')
    ap.add_argument('--models', nargs='+', default=['ast-tiny', 'ast-base'], help='backbones')
    ap.add_argument('--methods', nargs='+', default=['patchmix_cl'], help="methods (keys of STEPS: 'patchmix_cl', 'ce', ...)")
    ap.add_argument('--batch', nargs='+', type=int, default=None, help='batch per model (one value: all); default 8 for '
                    'ast-tiny/ast-small, 2 for ast-base')
    ap.add_argument('--steps', nargs='+', type=int, default=None, help='timed steps per model (one value: all); '
                    'default 4 for ast-tiny/ast-small, 2 for ast-base')
    ap.add_argument('--warmup', type=int, default=1, help='untimed steps first (the first one is FLOP-counted)')
    ap.add_argument('--specaug', default='upstream', choices=['clean', 'upstream', 'off'], help='SpecAugment variant')
    ap.add_argument('--data-passes', type=int, default=1, help='epochs over the training rows for the data-only figure')
    ap.add_argument('--no-peak', action='store_true', help='skip the matmul peak measurement')
    ap.add_argument('--gpu-batch', type=int, default=8, help='ast-base batch for the CUDA bf16 run')
    ap.add_argument('--gpu-steps', type=int, default=10, help='timed steps of the CUDA bf16 run')
    ap.add_argument('--precisions', nargs='+', choices=['fp32', 'bf16', 'fp16'],
                    help='CPU precisions (default: fp32, and bf16 where the CPU has native bf16)')
    ap.add_argument('--json', action='store_true', help='also print one JSON line with all figures at the end')
    args = ap.parse_args(argv)
    for opt in ('batch', 'steps'):
        v = getattr(args, opt)
        if v is not None and len(v) not in (1, len(args.models)):
            ap.error(f'--{opt} needs 1 or {len(args.models)} values, got {len(v)}')
    big = lambda m: m == 'ast-base'
    batches = (args.batch * len(args.models) if args.batch and len(args.batch) == 1 else args.batch) or \
              [2 if big(m) else 8 for m in args.models]
    steps = (args.steps * len(args.models) if args.steps and len(args.steps) == 1 else args.steps) or \
            [2 if big(m) else 4 for m in args.models]
    unknown = [m for m in args.methods if m not in STEPS]
    if unknown: ap.error(f'unknown methods {unknown}; expected some of {list(STEPS)}')

    torch.set_num_threads(os.cpu_count())
    cpu = torch.device('cpu')
    out: dict = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                     duration=args.duration, specaug=args.specaug)
    load = os.getloadavg()[0]
    out['loadavg_start'] = load
    precisions = args.precisions or (['fp32', 'bf16'] if cpu_bf16_native() else ['fp32'])
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, precisions {", ".join(precisions)} '
          f'(native bf16: {"yes" if cpu_bf16_native() else "no"}), num_workers 0 (the Config default); load average {load:.2f} at start')
    if load > 0.5:
        print(f'  warning: load average {load:.2f} > 0.5: other processes compete for the cores; timings are pessimistic')

    t0 = time.perf_counter()
    data = load_data(make_config(data_dir=args.data, cache=args.cache, duration=args.duration))
    out['load_data_s'] = time.perf_counter() - t0
    feats = data.cache.features
    out['data'] = dict(dir=str(data.data_dir), cache=str(getattr(data.cache, 'path', '')), shape=list(feats.shape),
                       dtype=str(feats.dtype), train=int(len(data.rows('train'))))
    print(f'data: {data.data_dir} | cache {feats.shape} {feats.dtype} ({feats.nbytes / 2**20:.0f} MiB) | '
          f'{len(data.rows("train"))} train cycles | load_data (build/reuse cache) {out["load_data_s"]:.2f} s', flush=True)

    peaks = {}
    if not args.no_peak:
        for prec in precisions:
            pk = matmul_peak(dtype=torch.bfloat16 if prec == 'bf16' else torch.float32)
            out.setdefault('cpu_peaks', {})[prec] = pk; peaks[prec] = pk['peak']
            print(f'matmul peak ({prec} 4096^3, best of 3): {pk["peak"] / 1e9:.1f} GFLOP/s', flush=True)

    dcfg = make_config(batch_size=max(batches), duration=args.duration, specaug=args.specaug)
    dr = bench_data(data, dcfg, cpu, args.data_passes)
    out['data_only'] = dr
    print(f'data only (DataLoader + SpecAugment {args.specaug}, batch {dr["batch"]}, {dr["samples"]} samples): '
          f'{dr["samples_per_s"]:.0f} samples/s ({dr["ms_per_sample"]:.2f} ms/sample: loading {dr["load_s"]:.3f} s, '
          f'SpecAugment {dr["specaug_s"]:.3f} s)', flush=True)

    out['cpu'] = []
    for name, b, n in zip(args.models, batches, steps):
        for method in args.methods:
            for prec in precisions:
                r = bench_train(data, name, method, b, n, args.warmup, cpu, args.specaug, args.duration, args.data, prec,
                                peaks.get(prec))
                out['cpu'].append(r)
                print(_fmt(r), flush=True)
            if len(precisions) > 1:
                t = {r['precision']: r['median_step_s'] for r in out['cpu'] if r['model'] == name and r['method'] == method}
                print(f'  {name} {method}: bf16/fp32 step time {t["bf16"] / t["fp32"]:.2f}', flush=True)
    if out['cpu']:
        slowest = min(r['samples_per_s'] for r in out['cpu'])
        print(f'loading headroom: data-only {dr["samples_per_s"]:.0f} samples/s vs the fastest training '
              f'{max(r["samples_per_s"] for r in out["cpu"]):.1f} samples/s '
              f'({dr["samples_per_s"] / max(r["samples_per_s"] for r in out["cpu"]):.0f}x); slowest {slowest:.2f} samples/s')

    if torch.cuda.is_available():
        dev = torch.device('cuda')
        gpk = matmul_peak(8192, device='cuda')
        out['cuda_fp32_matmul_peak'] = gpk
        gd = bench_data(data, make_config(batch_size=args.gpu_batch, duration=args.duration, specaug=args.specaug),
                        dev, args.data_passes)
        out['cuda_data_only'] = gd
        r = bench_train(data, 'ast-base', 'patchmix_cl', args.gpu_batch, args.gpu_steps, max(args.warmup, 3), dev,
                        args.specaug, args.duration, args.data, 'bf16', None)
        out['cuda'] = r
        print(f'CUDA {torch.cuda.get_device_name()}: data only {gd["samples_per_s"]:.0f} samples/s')
        print('CUDA ' + _fmt(r))
        if r['achieved_flops']:
            print(f'CUDA ast-base batch {args.gpu_batch} bf16 autocast: {r["samples_per_s"]:.1f} samples/s, '
                  f'{r["achieved_flops"] / 1e12:.1f} TFLOP/s achieved (data loading included)')
    else:
        out['cuda'] = None
        print('CUDA: skipped (torch.cuda.is_available() is False): ast-base batch 8 bf16-autocast run not done')

    return finish(out, args.json)


if __name__ == '__main__':
    main()
