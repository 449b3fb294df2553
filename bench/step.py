"""Benchmark: one full Patch-Mix CL training step against this machine's matmul peak (a script, not a test).

What one step does (method.md §5.3, §6; `--target_type grad_block`, α = 1, Adam lr 5e-5, wd 1e-6):

1. clean pass    z  = enc(x)                      (B, D);  L_CE = CE(head(z), y)
2. mixed pass    z̃  = enc(x, mix=PatchMixer(...))  (B, D);  new λ, π, mask drawn inside the forward
3. L_CL = patchmix_contrastive_loss(h(z̃), stop_grad(z), λ, π, τ = 0.06)
4. (L_CE + α·L_CL).backward();  Adam step over backbone + head + projector

Both passes have a backward: the CE gradient flows through the clean pass, the CL gradient through the mixed pass.

FLOPs (one multiply-add = 2 FLOPs), per sample, N = n_f·n_t + 2 tokens (12·79 + 2 = 950), P = n_f·n_t patches,
D = width, L = depth, C = classes:

    per layer forward   2·N·(3D² + D² + 8D²) = 24·N·D²    qkv (3D²), proj (D²), MLP fc1 + fc2 (2·4D²)
                      + 2·2·N²·D            =  4·N²·D    attention: Q·Kᵀ and A·V
    patch conv fwd      2·P·D·256                         16×16 kernel, 1 input channel
    forward + backward  3 × forward for the blocks (backward = grad input + grad weight = 2 × forward);
                        2 × forward for the patch conv (its input needs no gradient: only grad weight)
    step                2 passes (clean, mixed) × B × (3·L·(24·N·D² + 4·N²·D) + 2·2·P·D·256)
                        + heads: 3·2·D·C (clean, classifier) + 3·2·(D·D + D·D) (mixed, projector)
    (LayerNorm, GELU, softmax, residual adds, Adam: O(N·D) or O(#params) element-wise; not counted)

The same step is also counted by `torch.utils.flop_counter.FlopCounterMode` (on the warm-up step). Its registry has no
entry for the CPU attention kernel (`aten._scaled_dot_product_flash_attention_for_cpu[_backward]`), so one is added
here with the registry's own SDPA formulas. That backward formula counts 5 attention matmuls (the 4 gradient matmuls
plus the recomputation of Q·Kᵀ done by flash backward), i.e. 2.5 × forward where the analytic count uses 2 ×; so the
counter is higher than the analytic count by 2·B·L·2·N²·D (about +7 % for ast-tiny, +3 % for ast-base). The counter
is preferred for the FLOP/s figures (it is the work the machine really does); both are printed when they differ.

Usage:
    python bench/step.py                                   # ast-base @ 2, ast-tiny @ 8, 3 timed steps each
    python bench/step.py --models ast-base --batch 2 --steps 5 --profile --json

The peak is measured in the same run (start and end; the higher one is used), never assumed: machines differ (the stack
notes' AVX2 machine gives about 143 GFLOP/s for 4096³; an AVX-512 one about 370), and a shared 2-core VM drifts with
the load of other processes (the load average is printed; timings under load are noisy).

Precisions: fp32 always; bf16 autocast too where the processor has native bf16 matrix instructions (AMX-BF16 or
AVX512-BF16, detected at run time: on an AVX2 processor bf16 autocast is ~46x slower and is skipped unless
`--precisions fp32 bf16` asks for it). Each precision's fraction is against the peak of its own dtype (an fp32 and a bf16
4096³ matmul, measured in this run), and the bf16/fp32 step-time ratio is printed. On a CUDA GPU it also times
ast-base at the paper's batch (8) under bf16 autocast: TFLOP/s and seconds per ICBHI epoch (517 steps).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch
from torch.utils import flop_counter as fc

from patchmix_nb.config import make_config
from patchmix_nb.devices import cpu_bf16_native
from patchmix_nb.train import setup_run

N_CLS, N_FRAMES, N_MELS = 4, 798, 128
TAU, ALPHA, LR, WD = 0.06, 1.0, 5e-5, 1e-6


# ---------------------------------------------------------------------------------------------------------------- peak
def matmul_peak(n: int = 4096, repeats: int = 3, device: str = 'cpu', dtype=torch.float32) -> dict:
    "Best-of-`repeats` n³ matmul rate (FLOP/s) in `dtype` after one warm-up."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b); _sync(device)                                  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); torch.matmul(a, b); _sync(device); times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    return dict(n=n, best_s=min(times), flops=flops, peak=flops / min(times))


def _sync(device) -> None:
    if str(device).startswith('cuda'): torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------------------- FLOPs
def analytic_flops(model, batch: int, n_cls: int = N_CLS) -> dict:
    "FLOPs of one Patch-Mix CL step by the formula in the module docstring (clean + mixed forward/backward)."
    D, L = model.embed_dim, len(model.blocks)
    P = model.num_patches
    N = P + 2
    k = model.patch_size ** 2
    block_fwd = L * (24 * N * D * D + 4 * N * N * D)                   # per sample
    conv_fwd = 2 * P * D * k
    per_pass = batch * (3 * block_fwd + 2 * conv_fwd)                  # forward + backward
    heads = batch * (3 * 2 * D * n_cls + 3 * 2 * (D * D + D * D))
    return dict(total=2 * per_pass + heads, blocks_linear=2 * batch * 3 * L * 24 * N * D * D,
                attention=2 * batch * 3 * L * 4 * N * N * D, patch_conv=2 * batch * 2 * conv_fwd, heads=heads)


def _cpu_sdpa_fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(query, key, value)


def _cpu_sdpa_bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out, query, key, value)


def _custom_mapping() -> dict:
    "FLOP formulas for the CPU flash-attention ops, missing from torch's registry."
    aten = torch.ops.aten
    m = {}
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        m[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_fwd
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu_backward'):
        m[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_bwd
    return {k: v for k, v in m.items() if k not in fc.flop_registry}


# ---------------------------------------------------------------------------------------------------------------- step
class Trainer:
    """The trainer's own setup (`setup_run`) and step (`Learner.step` = `train_step`: ma snapshot, forward, backward,
    Adam, blend) on a fixed batch."""
    def __init__(self, name: str, batch: int, device: str = 'cpu', precision: str = 'fp32', seed: int = 0):
        torch.manual_seed(seed)
        self.device = device
        cfg = make_config(model=name, method='patchmix_cl', batch_size=batch, lr=LR, weight_decay=WD, temperature=TAU,
                          alpha=ALPHA, precision=precision, device=device, ma_beta=0.5)
        self.learner = setup_run(cfg, N_FRAMES, device)                  # model, Adam, scaler, ma_update as train()
        self.model = self.learner.model
        self.backbone = self.model.backbone
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.x = torch.randn(batch, 1, N_FRAMES, N_MELS, device=device)  # (B, 1, T, F)
        self.y = torch.randint(0, N_CLS, (batch,), device=device)         # (B,)
        self.model.generator.manual_seed(seed)
        self.model.train()

    def step(self) -> float:
        "One full step; returns the loss."
        loss, _ = self.learner.step(self.x, self.y)                      # train_step(model, x, y, opt, ma, scaler)
        return float(loss)

    def timed_step(self) -> float:
        _sync(self.device); t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        return time.perf_counter() - t0

    def counted_step(self) -> tuple[float, int, dict]:
        "One step under FlopCounterMode (doubles as warm-up): (seconds, FLOPs, FLOPs per op)."
        counter = fc.FlopCounterMode(display=False, custom_mapping=_custom_mapping())
        _sync(self.device); t0 = time.perf_counter()
        with counter:
            self.step()
        _sync(self.device)
        per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get('Global', {}).items()}
        return time.perf_counter() - t0, int(counter.get_total_flops()), per_op


def bench_model(name: str, batch: int, steps: int, peak: float, device: str = 'cpu', precision: str = 'fp32',
                warmup: int = 1) -> dict:
    "Warm-up (the first one FLOP-counted), then `steps` timed steps; median time and achieved fraction of `peak`."
    tr = Trainer(name, batch, device, precision)
    ana = analytic_flops(tr.backbone, batch)
    try:
        t_count, counted, per_op = tr.counted_step()
    except Exception as e:                                             # the counter is a cross-check only
        print(f'  FlopCounterMode failed ({type(e).__name__}: {e}); using the analytic count', file=sys.stderr)
        tr.step(); counted, per_op = None, {}
    for _ in range(warmup - 1): tr.step()
    times = [tr.timed_step() for _ in range(steps)]
    med = statistics.median(times)
    flops = counted if counted else ana['total']
    dt = tr.model.amp_dtype
    return dict(model=name, batch=batch, device=device, precision=precision,
                dtype=str(dt).replace('torch.', '') + '-autocast' if dt else 'float32',
                params=tr.n_params, tokens=tr.backbone.num_patches + 2, width=tr.backbone.embed_dim,
                depth=len(tr.backbone.blocks), steps=steps, times_s=[round(t, 4) for t in times], median_s=med,
                flops_counter=counted, flops_analytic=ana['total'], flops_analytic_parts=ana,
                flops_counter_per_op=per_op, flops_used='counter' if counted else 'analytic',
                achieved=flops / med, fraction_of_peak=flops / med / peak if peak else None)


# ---------------------------------------------------------------------------------------------------------------- profile
CATEGORIES = (       # (label, substrings of op names), first match wins: matmul before add, attention bwd before fwd
    ('matmul (addmm/mm/bmm/linear)', ('addmm', 'aten::mm', 'bmm', 'matmul', 'linear')),
    ('attention bwd (SDPA)', ('flash_attention_for_cpu_backward', 'attentionbackward')),
    ('attention fwd (SDPA)', ('flash_attention_for_cpu', 'scaled_dot_product')),
    ('patch conv', ('convolution', 'conv2d', 'mkldnn_convolution')),
    ('LayerNorm', ('layer_norm',)),
    ('GELU', ('gelu',)),
    ('optimizer (Adam)', ('_foreach', 'adam')),
    ('copies/cat/where/index', ('copy_', 'cat', 'where', 'index', 'clone', 'contiguous', 'to_copy')),
    ('element-wise add/mul/div', ('aten::add', 'aten::mul', 'aten::div', 'aten::sub')),
)


def profile_step(name: str, batch: int, top: int = 25, precision: str = 'fp32') -> dict:
    "Profile one step (after a warm-up) with torch.profiler: top ops by self CPU time and a per-category summary."
    from torch.profiler import ProfilerActivity, profile
    tr = Trainer(name, batch, precision=precision)
    tr.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        t0 = time.perf_counter(); tr.step(); wall = time.perf_counter() - t0
    avgs = prof.key_averages()
    print(f'\n== torch.profiler: one {name} step, batch {batch} (wall {wall:.2f} s under the profiler) ==')
    print(avgs.table(sort_by='self_cpu_time_total', row_limit=top, max_name_column_width=55))
    cats: dict[str, float] = defaultdict(float)
    total = sum(e.self_cpu_time_total for e in avgs) / 1e6
    for e in avgs:
        key = e.key.lower()
        label = next((lab for lab, subs in CATEGORIES if any(s in key for s in subs)), 'other')
        cats[label] += e.self_cpu_time_total / 1e6
    adam = sum(e.cpu_time_total for e in avgs if e.key.startswith('Optimizer.step')) / 1e6
    print(f'Adam optimizer step, CPU time incl. its element-wise children: {adam:.2f} s ({100 * adam / total:.1f} %); '
          f'those children (sqrt, lerp_, addcdiv_, ...) are counted under their own categories below')
    print(f'self CPU time by category (sum {total:.2f} s):')
    for lab, s in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f'  {lab:34s} {s:7.2f} s  {100 * s / total:5.1f} %')
    return dict(model=name, batch=batch, wall_s=wall, self_cpu_s=total, adam_step_s=adam, categories=dict(cats))


# ---------------------------------------------------------------------------------------------------------------- main
def finish(out: dict, as_json: bool) -> dict:
    "Closing lines of a benchmark: the load average at the end and, with --json, all figures on one line."
    out['loadavg_end'] = os.getloadavg()[0]
    print(f'load average at end: {out["loadavg_end"]:.2f}')
    if as_json:
        print(json.dumps(out, default=str))
    return out


def _fmt(r: dict) -> str:
    c, a = r['flops_counter'], r['flops_analytic']
    fl = f'{(c or a) / 1e9:8.1f} GFLOP ({r["flops_used"]})'
    if c and abs(c - a) / a > 0.005:
        fl += f', analytic {a / 1e9:.1f} GFLOP ({100 * (a - c) / c:+.1f} %)'
    return (f'{r["model"]:9s} batch {r["batch"]:2d} {r["dtype"]:14s}: step median {r["median_s"]:7.3f} s '
            f'(steps {", ".join(f"{t:.3f}" for t in r["times_s"])}); {fl};\n          '
            f'achieved {r["achieved"] / 1e9:6.1f} GFLOP/s = {100 * r["fraction_of_peak"]:5.1f} % of peak')


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=['ast-base', 'ast-tiny'], help="backbones ('ast-base', 'ast-tiny', ...)")
    ap.add_argument('--batch', nargs='+', type=int, default=[2, 8], help='batch size per model (one value: all models)')
    ap.add_argument('--steps', type=int, default=3, help='timed steps per model (after one warm-up)')
    ap.add_argument('--peak-n', type=int, default=4096, help='matmul size for the peak')
    ap.add_argument('--peak-repeats', type=int, default=5, help='timed matmuls per peak measurement (best of)')
    ap.add_argument('--profile', action='store_true', help='also profile one step of the first model')
    ap.add_argument('--gpu-batch', type=int, default=8, help='ast-base batch for the CUDA bf16 run')
    ap.add_argument('--precisions', nargs='+', choices=['fp32', 'bf16', 'fp16'],
                    help='CPU precisions to time (default: fp32, and bf16 where the CPU has native bf16)')
    ap.add_argument('--json', action='store_true', help='also print one JSON line with all figures')
    args = ap.parse_args(argv)
    if len(args.batch) not in (1, len(args.models)):
        ap.error(f'--batch needs 1 or {len(args.models)} values, got {len(args.batch)}')
    batches = args.batch * len(args.models) if len(args.batch) == 1 else args.batch

    torch.set_num_threads(os.cpu_count())
    out: dict = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    load = os.getloadavg()[0]
    out['loadavg_start'] = load
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; '
          f'load average {load:.2f} at start')
    if load > 0.5:
        print(f'  warning: load average {load:.2f} > 0.5: other processes compete for the cores; timings are pessimistic')

    precisions = args.precisions or (['fp32', 'bf16'] if cpu_bf16_native() else ['fp32'])
    out['cpu_bf16_native'] = cpu_bf16_native()
    print(f'native bf16 matrix instructions (AMX-BF16 / AVX512-BF16): {"yes" if cpu_bf16_native() else "no"}; '
          f'precisions: {", ".join(precisions)}')
    peaks = {}
    for prec in precisions:
        dt = torch.bfloat16 if prec == 'bf16' else torch.float32
        peaks[prec] = matmul_peak(args.peak_n, repeats=args.peak_repeats, dtype=dt)
        print(f'matmul peak ({prec} {args.peak_n}^3, best of {args.peak_repeats}): {peaks[prec]["peak"] / 1e9:.1f} GFLOP/s', flush=True)
    out['cpu_peak'] = peaks['fp32']; out['cpu_peaks'] = peaks

    out['cpu'] = []
    for name, b in zip(args.models, batches):
        for prec in precisions:
            r = bench_model(name, b, args.steps, peaks[prec]['peak'], precision=prec)
            out['cpu'].append(r)
            print(_fmt(r), flush=True)

    for prec in precisions:                                            # again: on a shared VM the peak drifts
        dt = torch.bfloat16 if prec == 'bf16' else torch.float32
        pk2 = matmul_peak(args.peak_n, repeats=args.peak_repeats, dtype=dt)
        if pk2['peak'] > peaks[prec]['peak']:
            peaks[prec] = pk2
            for r in out['cpu']:
                if r['precision'] == prec: r['fraction_of_peak'] = r['achieved'] / pk2['peak']
        print(f'matmul peak ({prec}) again after the steps: {pk2["peak"] / 1e9:.1f} GFLOP/s; the higher one is used')
    for r in out['cpu']:
        print(f'  {r["model"]:9s} batch {r["batch"]:2d} {r["precision"]}: {100 * r["fraction_of_peak"]:5.1f} % of the {r["precision"]} peak')
    out['bf16_over_fp32'] = {}
    if 'bf16' in precisions:
        for name in args.models:
            t = {r['precision']: r['median_s'] for r in out['cpu'] if r['model'] == name}
            out['bf16_over_fp32'][name] = t['bf16'] / t['fp32']
            print(f'{name}: bf16/fp32 step time {t["bf16"] / t["fp32"]:.2f} ({t["fp32"] / t["bf16"]:.2f}x faster)'
                  + (f'; target <= 0.65: {"met" if t["bf16"] / t["fp32"] <= 0.65 else "NOT met"}' if name == 'ast-base' else ''))
    if 'ast-base' in args.models:
        frac = next(r['fraction_of_peak'] for r in out['cpu'] if r['model'] == 'ast-base' and r['precision'] == 'fp32')
        print(f'ast-base fp32: {100 * frac:.1f} % of the fp32 matmul peak')

    if args.profile:
        out['profile'] = profile_step(args.models[0], batches[0], precision=precisions[-1])

    if torch.cuda.is_available():
        gpk = matmul_peak(8192, device='cuda')
        out['cuda_fp32_matmul_peak'] = gpk
        bpk = matmul_peak(8192, device='cuda', dtype=torch.bfloat16)
        out['cuda_bf16_matmul_peak'] = bpk
        r = bench_model('ast-base', args.gpu_batch, max(args.steps, 10), bpk['peak'], device='cuda', precision='bf16',
                        warmup=3)
        r['seconds_per_icbhi_epoch'] = r['median_s'] * (4142 // args.gpu_batch)
        out['cuda'] = r
        print(f'CUDA {torch.cuda.get_device_name()}: ast-base batch {args.gpu_batch} bf16 autocast: step median '
              f'{r["median_s"] * 1e3:.1f} ms, achieved {r["achieved"] / 1e12:.1f} TFLOP/s = {100 * r["fraction_of_peak"]:.1f} % '
              f'of the bf16 matmul peak ({bpk["peak"] / 1e12:.0f} TFLOP/s); one ICBHI epoch ({4142 // args.gpu_batch} steps): '
              f'{r["seconds_per_icbhi_epoch"]:.0f} s of steps')
    else:
        out['cuda'] = None
        print('CUDA: skipped (torch.cuda.is_available() is False): ast-base batch 8 bf16-autocast run not done')

    return finish(out, args.json)


if __name__ == '__main__':
    main()
