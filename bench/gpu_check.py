"""Check the CUDA path end to end on one GPU in a few minutes (a script, not a test).

For a user who has a GPU (this project's CI has none). On the synthetic set at the paper's clip length (8 s), it runs
the real trainer (`patchmix_nb.train.train`) and reports, for each precision (bf16 autocast, and fp16 with a
GradScaler):

1. a few `ast-base` Patch-Mix CL steps at the paper's batch (8): finite losses, the precision actually used;
2. resume: `--resume` continues the run from `last.pt` for a second epoch (history grows, no error);
3. eval: `evaluate_run` on `best.pt` reproduces the run's own reported figure (within a mixed-precision tolerance);
4. throughput: samples/s and seconds per step, and the extrapolated time of one ICBHI epoch (517 steps).

Usage:
    python bench/gpu_check.py                         # on CUDA: ast-base, 8 s clips, bf16 then fp16, ~2-4 minutes
    python bench/gpu_check.py --device cpu --model ast-tiny --duration 2 --precisions fp32 bf16    # the same on a CPU

Exits 1 if any check fails, printing which.
"""
from __future__ import annotations

import argparse, json, os, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch

from patchmix_nb.config import make_config
from patchmix_nb.devices import amp_dtype, resolve_device
from patchmix_nb.inference import evaluate_run
from patchmix_nb.train import train


def check(precision: str, args, root: Path) -> dict:
    out = root / f'run-{precision}'
    cfg = make_config('smoke', model=args.model, duration=args.duration, batch_size=args.batch, precision=precision,
                      device=args.device, epochs=1, max_steps=args.steps, synthetic_recordings=args.recordings,
                      out_dir=str(out), progress=False, report_best_on_test=True)
    dev = resolve_device(args.device)
    res = dict(precision=precision, autocast=str(amp_dtype(dev, precision) or 'float32').replace('torch.', ''), problems=[])
    t0 = time.perf_counter(); m1 = train(cfg, log=None); res['first_epoch_s'] = time.perf_counter() - t0
    h = m1['history'][0]
    steps = h['steps']['loss']
    res['losses'] = [round(v, 4) for v in steps]
    if not all(map(lambda v: v == v and abs(v) != float('inf'), steps)): res['problems'].append('non-finite loss')
    res['step_s'] = h['seconds'] / len(steps); res['samples_per_s'] = args.batch / res['step_s']
    res['icbhi_epoch_s'] = res['step_s'] * (4142 // args.batch)
    m2 = train(replace(cfg, epochs=2), resume=True, log=None)
    if [e['epoch'] for e in m2['history']] != [1, 2]: res['problems'].append(f"resume: history {[e['epoch'] for e in m2['history']]}")
    ev = evaluate_run(out / 'best.pt', device=str(dev))
    res['eval_score'], res['reported_score'] = ev['score'], m2['test']['score']
    tol = 0.0 if res['autocast'] == 'float32' else 2.0                  # points of Score: argmax flips under autocast
    if abs(ev['score'] - m2['test']['score']) > tol + 1e-6:
        res['problems'].append(f"eval {ev['score']:.2f} vs reported {m2['test']['score']:.2f}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda'); ap.add_argument('--model', default='ast-base')
    ap.add_argument('--duration', type=float, default=8.0); ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=6, help='training steps per epoch')
    ap.add_argument('--recordings', type=int, default=48, help='synthetic recordings')
    ap.add_argument('--precisions', nargs='+', default=None, help='default: bf16 fp16 on CUDA, fp32 bf16 on the CPU')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print('gpu_check: no CUDA GPU visible to torch (use --device cpu to run the same checks on the CPU)', file=sys.stderr)
        return 2
    precisions = args.precisions or (['bf16', 'fp16'] if args.device.startswith('cuda') else ['fp32', 'bf16'])
    name = torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'
    print(f'{name}: {args.model}, {args.duration:g} s clips, batch {args.batch}, {args.steps} steps per epoch, torch {torch.__version__}')
    t0, results = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for p in precisions:
            r = check(p, args, Path(tmp)); results.append(r)
            print(f"{p:5s} (autocast {r['autocast']}): losses {r['losses']}; {r['step_s'] * 1e3:.0f} ms/step, "
                  f"{r['samples_per_s']:.1f} samples/s, one ICBHI epoch ~{r['icbhi_epoch_s'] / 60:.1f} min; "
                  f"resume ok; eval {r['eval_score']:.2f} vs reported {r['reported_score']:.2f}; "
                  f"{'OK' if not r['problems'] else 'FAILED: ' + '; '.join(r['problems'])}", flush=True)
    print(f'total {time.perf_counter() - t0:.0f} s')
    if args.json: print(json.dumps(results))
    return 1 if any(r['problems'] for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
