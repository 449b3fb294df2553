"""What leaving the padding out of attention costs (pad='mask' against pad='zero'): training steps of the same model on
the same batches, alternating, in one run.

    python bench/mask.py [--preset cpu-demo] [--method patchmix_cl] [--steps 20] [--padded 0.5]

In each batch a share `--padded` of the cycles is cut at a random frame and zero-padded from there (the flat log floor
the model finds by itself). Prints the median milliseconds per step of each, their ratio, and the share of tokens the
mask leaves out. The load average is printed at the start and the end (a shared VM drifts).
"""
import argparse, os, statistics, time

import torch

from patchmix_nb.config import make_config
from patchmix_nb.data import n_frames_for
from patchmix_nb.model import build_model
from patchmix_nb.train import MovingAverageUpdate, make_optimizer, train_step


def batch(cfg, n_frames: int, padded: float, g: torch.Generator):
    x = torch.randn(cfg.batch_size, 1, n_frames, 128, generator=g)
    for i in range(cfg.batch_size):
        if torch.rand(1, generator=g) < padded:                     # padded from a random frame on
            x[i, :, int(torch.randint(n_frames // 8, n_frames, (1,), generator=g)):] = -1.3
    return x, torch.randint(0, 4, (cfg.batch_size,), generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--preset', default='cpu-demo')
    ap.add_argument('--method', default='patchmix_cl')
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--padded', type=float, default=0.5)
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    models, opts = {}, {}
    for pad in ('zero', 'mask'):
        cfg = make_config(a.preset, method=a.method, pad=pad, precision='fp32', device='cpu')
        torch.manual_seed(0)
        models[pad] = build_model(cfg, n_frames_for(cfg.duration))
        opts[pad] = (make_optimizer(models[pad], cfg.lr, cfg.weight_decay),
                     MovingAverageUpdate(models[pad].nets(), cfg.ma_beta))
    n = n_frames_for(cfg.duration)
    g = torch.Generator().manual_seed(0)
    batches = [batch(cfg, n, a.padded, g) for _ in range(a.steps + 2)]
    secs = {'zero': [], 'mask': []}
    for i, (x, y) in enumerate(batches):
        for pad in ('zero', 'mask') if i % 2 == 0 else ('mask', 'zero'):
            t = time.perf_counter()
            train_step(models[pad], x, y, *opts[pad])
            if i >= 2: secs[pad].append(time.perf_counter() - t)      # two warm-up steps each
    ast = models['mask'].backbone
    left = 1 - torch.cat([ast.token_keep(x).float().mean(1) for x, _ in batches]).mean().item()
    z, m = statistics.median(secs['zero']), statistics.median(secs['mask'])
    print(f"{a.preset} {a.method}, batch {cfg.batch_size}, {ast.num_patches} patch tokens, {a.steps} steps each: "
          f"zero {z * 1e3:.1f} ms, mask {m * 1e3:.1f} ms per step; mask / zero = {m / z:.2f}; "
          f"tokens left out {left:.0%}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == '__main__':
    main()
