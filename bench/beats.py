"""Benchmark: one Patch-Mix CL training step on BEATs against the same step on AST (a script, not a test).

The step is `PatchMixModel.forward` with method `patchmix_cl` (clean and mixed passes fused into one batch of 2B, CE +
contrastive loss), its backward and an Adam step, on the ICBHI input (798 frames x 128 mel). BEATs reads 8 x 49 = 392
tiled tokens, AST 12 x 79 + 2 = 950 overlapping ones, at the same width (768, 12 layers for the base sizes): attention
is quadratic in the tokens and the rest linear, so BEATs' step should cost well under half of AST's. BEATs' own
fbank (`beats_fbank`, the official preprocess) is timed per 8-second cycle as well: it belongs to the feature cache,
not to the step.

Usage:
    python bench/beats.py                                  # ast-tiny vs BEATs at its width and depth, batch 8
    python bench/beats.py --sizes base --batch 8 --steps 10  # the paper's batch; on CUDA under bf16 autocast

On CUDA it prints seconds per ICBHI epoch (4,142 training cycles: 517 steps at batch 8) for each backbone.
Figures are printed, never asserted; compare backbones within one run (a shared VM drifts).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch

from patchmix_nb.ast import create_backbone
from patchmix_nb.beats import BEATs, beats_fbank
from patchmix_nb.model import PatchMixModel

N_CLS, N_FRAMES, N_MELS, TRAIN_CYCLES = 4, 798, 128, 4142
# BEATs at ast-tiny's width and depth (192 wide, 4 layers, 3 heads) for a like-for-like CPU comparison
BEATS_AS_AST_TINY = dict(encoder_layers=4, encoder_embed_dim=192, encoder_ffn_embed_dim=768, encoder_attention_heads=3,
                         embed_dim=192)
SIZES = {'tiny': ('ast-tiny', 'beats@ast-tiny'), 'base': ('ast-base', 'beats')}


def backbone(name: str) -> torch.nn.Module:
    if name == 'beats@ast-tiny': return BEATs('beats', n_frames=N_FRAMES, **BEATS_AS_AST_TINY)
    if name.startswith('beats'): return BEATs(name, n_frames=N_FRAMES)
    return create_backbone(name, n_frames=N_FRAMES, n_mels=N_MELS)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda': torch.cuda.synchronize()


def time_step(backbone: torch.nn.Module, batch: int, steps: int, device: torch.device, amp) -> list[float]:
    "Seconds of each of `steps` Patch-Mix CL steps (after one warm-up step)."
    model = PatchMixModel(backbone, N_CLS, 'patchmix_cl', amp_dtype=amp).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-5, weight_decay=1e-6)
    x = torch.randn(batch, 1, N_FRAMES, N_MELS, device=device)
    y = torch.arange(batch, device=device) % N_CLS
    times = []
    for i in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        with model.autocast(): loss, _ = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i: times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', choices=sorted(SIZES), default='tiny',
                    help='tiny (ast-tiny and BEATs at its width and depth) or base (ast-base and beats)')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=3, help='timed steps per backbone (after one warm-up)')
    ap.add_argument('--device', default='auto', help="'auto' (cuda where available), 'cpu' or 'cuda'")
    args = ap.parse_args(argv)
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device)
    amp = torch.bfloat16 if device.type == 'cuda' and torch.cuda.is_bf16_supported() else None
    torch.manual_seed(0)
    print(f"device {device}{' bf16 autocast' if amp else ' fp32'}; load average {os.getloadavg()[0]:.1f}; "
          f"batch {args.batch}; {torch.get_num_threads()} threads")
    wave = 0.1 * torch.randn(16000 * 8)
    t0 = time.perf_counter()
    beats_fbank(wave)
    fb_s = time.perf_counter() - t0
    print(f"beats_fbank: {fb_s * 1000:.1f} ms per 8 s cycle (CPU, once per cycle into a feature cache)")
    out = {}
    for name in SIZES[args.sizes]:
        net = backbone(name)
        t = time_step(net, args.batch, args.steps, device, amp)
        tokens = net.num_patches + (0 if name.startswith('beats') else 2)
        out[name] = statistics.median(t)
        line = f"{name:14s} {tokens:4d} tokens  {sum(p.numel() for p in net.parameters()) / 1e6:6.1f} M params  " \
               f"step median {out[name]:.3f} s"
        if device.type == 'cuda': line += f"  ICBHI epoch {out[name] * (TRAIN_CYCLES // args.batch):.0f} s"
        print(line)
    a, b = SIZES[args.sizes]
    print(f"{b} / {a} step time: {out[b] / out[a]:.2f}; load average {os.getloadavg()[0]:.1f}")
    return out


if __name__ == '__main__':
    main()
