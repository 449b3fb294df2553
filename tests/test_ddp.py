"""One run on several processes: torchrun + DistributedDataParallel with gloo on the CPU (real launcher, real processes)."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

from patchmix_nb.runs import load_checkpoint

TORCHRUN = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')
pytestmark = pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_gloo_available(),
                                reason='torchrun or the gloo backend is not available')
SMALL = ['--preset', 'smoke', '--device', 'cpu', '--precision', 'fp32', '--no-progress', '--max-steps', '4']


def _run(cmd, **kw):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def _torchrun(args, n=2):
    return _run([TORCHRUN, '--standalone', '--nproc_per_node', str(n), '-m', 'patchmix_nb', 'train', *args])


def test_ce_on_two_processes_equals_one_process(tmp_path):
    "ce, global batch 8: 2 processes × 4 cycles end on the same weights and scores as 1 process × 8, after 4 steps."
    args = SMALL + ['--method', 'ce', '--batch-size', '8']
    _run([sys.executable, '-m', 'patchmix_nb', 'train', *args, '--out', str(tmp_path / 'one')])
    r = _torchrun(args + ['--out', str(tmp_path / 'two')])
    assert 'x 2 processes' in r.stdout and r.stdout.count('run folder:') == 1       # rank 0 alone reports
    a, b = load_checkpoint(tmp_path / 'one' / 'last.pt'), load_checkpoint(tmp_path / 'two' / 'last.pt')
    wa = torch.cat([v.flatten() for v in a['model'].values()]); wb = torch.cat([v.flatten() for v in b['model'].values()])
    close = (wb - wa).abs() <= 5e-5 + 1e-4 * wa.abs()
    # Adam's first steps move each weight by about ±lr whatever the gradient's size, so a near-zero gradient whose
    # rounding differs between the two reductions can move one weight in ~10^5 by a fraction of lr (1e-3)
    assert close.float().mean() > 0.9999 and (wb - wa).abs().max() < 1e-3, ((~close).sum(), (wb - wa).abs().max())
    ha, hb = a['history'][0], b['history'][0]
    assert hb['steps']['loss'] == pytest.approx(ha['steps']['loss'], rel=1e-5)          # every step's loss
    assert hb['val'] == pytest.approx(ha['val'], abs=1e-6) and hb['test'] == pytest.approx(ha['test'], abs=1e-6)
    assert sorted(p.name for p in (tmp_path / 'two').iterdir()) == ['best.pt', 'config.json', 'last.pt', 'metrics.json']


def test_patchmix_cl_under_torchrun_trains_and_resumes(tmp_path):
    "Patch-Mix CL (contrastive loss over the gathered global batch) on 2 processes; then --resume adds an epoch."
    out = tmp_path / 'cl'
    _torchrun(SMALL + ['--epochs', '1', '--out', str(out)])
    r = _torchrun(SMALL + ['--epochs', '2', '--resume', '--out', str(out)])
    assert 'resumed' in r.stdout
    m = json.loads((out / 'metrics.json').read_text())
    assert [h['epoch'] for h in m['history']] == [1, 2] and len(m['history'][1]['steps']['cl']) == 4
    assert all(torch.isfinite(torch.tensor(h['steps']['loss'])).all() for h in m['history'])
