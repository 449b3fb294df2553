"Tests of patchmix_nb.patchmix: Patch-Mix (§4), PatchMixer, Mixup and CutMix."
import math
import pytest
import torch
from patchmix_nb.patchmix import (PatchMixer, PatchMixInfo, cutmix, cutmix_box, mixup, patches_to_spectrogram,
                                  sample_lam, spectrogram_to_patches, token_mask_to_pixels)


def patch_mix(tokens, lam=None, beta=1.0, mode='random', grid=(12, 79), generator=None):
    "The one public API, as (mixed, λ, π)."
    mixed, info = PatchMixer(beta, mode, grid, generator, lam)(tokens)
    return mixed, info.lam, info.index


def patch_mix_plan(B, N, lam=None, mode='random', generator=None):
    "λ, π and the mask a PatchMixer draws for a (B, N, ·) batch."
    return PatchMixer(1.0, mode, (12, 79), generator, lam)(torch.zeros(B, N, 1))[1]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tokens(B=8, N=948, D=6, seed=0):
    return torch.randn(B, N, D, generator=_gen(seed))


def _replaced(mixed, tokens, index):
    "Positions (N,) bool replaced in every non-self-paired row, checked to be the same across the batch."
    rows = [i for i in range(len(index)) if index[i] != i]
    diffs = [(mixed[i] != tokens[i]).any(-1) for i in rows]
    for d in diffs[1:]: assert torch.equal(d, diffs[0])
    return diffs[0]


def test_kept_fraction_lam_03():
    mixed, lam, index = patch_mix(_tokens(), lam=0.3, generator=_gen())
    assert isinstance(lam, float)
    assert lam == pytest.approx(1 - 663 / 948, abs=1e-12)
    assert round(lam, 4) == 0.3006
    assert index.dtype == torch.long and sorted(index.tolist()) == list(range(8))


@pytest.mark.parametrize('lam', [0.0, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0])
def test_kept_fraction_grid(lam):
    info = patch_mix_plan(4, 948, lam=lam, generator=_gen())
    n = int(948 * (1 - lam))
    assert int(info.mask.sum()) == n
    assert info.lam == pytest.approx(1 - n / 948, abs=1e-12)
    tinfo = patch_mix_plan(4, 948, lam=lam, mode='time', generator=_gen())
    nt = int(79 * (1 - lam))
    assert int(tinfo.mask.sum()) == 12 * nt
    assert tinfo.lam == pytest.approx(1 - nt / 79, abs=1e-12)


def test_same_positions_and_partner_copy():
    tokens = _tokens(seed=1)
    before = tokens.clone()
    mixed, lam, index = patch_mix(tokens, lam=0.4, generator=_gen(5))
    assert torch.equal(tokens, before)                       # input not mutated
    assert mixed.data_ptr() != tokens.data_ptr()
    M = _replaced(mixed, tokens, index)
    assert int(M.sum()) == int(948 * 0.6)
    for i in range(len(index)):
        assert torch.equal(mixed[i, M], tokens[index[i], M])
        assert torch.equal(mixed[i, ~M], tokens[i, ~M])


def test_self_pair_is_noop():
    tokens = _tokens(B=1)
    mixed, lam, index = patch_mix(tokens, lam=0.2, generator=_gen())
    assert index.tolist() == [0]
    assert torch.equal(mixed, tokens)


def test_time_mode_whole_columns():
    tokens = _tokens(seed=2)
    mixed, lam, index = patch_mix(tokens, lam=0.3, mode='time', generator=_gen(3))
    M = _replaced(mixed, tokens, index).view(12, 79)
    cols = M.any(0)
    assert int(cols.sum()) == int(79 * 0.7) == 55
    assert torch.equal(M, cols.expand(12, 79))               # all 12 freq rows of each chosen column
    assert lam == pytest.approx(1 - 55 / 79)
    g = mixed.view(8, 12, 79, -1); t = tokens.view(8, 12, 79, -1)
    for i in range(8):
        assert torch.equal(g[i][:, cols], t[index[i]][:, cols])
        assert torch.equal(g[i][:, ~cols], t[i][:, ~cols])


def test_time_mode_bad_grid():
    with pytest.raises(ValueError, match='grid'):
        patch_mix(_tokens(N=100), lam=0.5, mode='time')


def test_bad_arguments():
    with pytest.raises(ValueError, match='mode'):
        patch_mix(_tokens(), mode='freq')
    with pytest.raises(ValueError, match='lam'):
        patch_mix(_tokens(), lam=1.5)
    with pytest.raises(ValueError, match=r'\(B, N, D\)'):
        patch_mix(torch.zeros(3, 4))


def test_determinism_with_generator():
    tokens = _tokens()
    a = patch_mix(tokens, beta=1.0, generator=_gen(11))
    b = patch_mix(tokens, beta=1.0, generator=_gen(11))
    c = patch_mix(tokens, beta=1.0, generator=_gen(12))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[1] != c[1]
    torch.manual_seed(4); d = patch_mix(tokens)             # global RNG: reproducible with manual_seed
    torch.manual_seed(4); e = patch_mix(tokens)
    assert torch.equal(d[0], e[0]) and d[1] == e[1]


def test_lam_distribution_and_beta_zero():
    g = _gen(0)
    draws = torch.tensor([sample_lam(1.0, g) for _ in range(4000)])
    assert 0 <= float(draws.min()) and float(draws.max()) <= 1
    assert abs(float(draws.mean()) - 0.5) < 0.02
    assert abs(float((draws < 0.25).float().mean()) - 0.25) < 0.03   # uniform for β = 1
    mixed, lam, _ = patch_mix(_tokens(), beta=0.0, generator=_gen())
    assert lam == 1.0 and torch.equal(mixed, _tokens())


def test_gradient_flows_to_both_samples():
    tokens = _tokens(B=2, N=948, D=3).requires_grad_()
    mixed, lam, index = patch_mix(tokens, lam=0.5, generator=_gen())
    mixed[0].sum().backward()
    src = index[0]
    if src != 0:
        assert tokens.grad[src].abs().sum() > 0 and tokens.grad[0].abs().sum() > 0
    assert float(tokens.grad.sum()) == pytest.approx(948 * 3)


def test_patchmixer_matches_naive_loop():
    tokens = _tokens()
    mixer = PatchMixer(beta=1.0, mode='random', generator=_gen(7))
    out, info = mixer(tokens)
    assert isinstance(info, PatchMixInfo) and mixer.info is info
    ref, lam, index = patch_mix(tokens, beta=1.0, generator=_gen(7))
    assert torch.equal(out, ref) and info.lam == lam and torch.equal(info.index, index)
    assert info.mask.dtype == torch.bool and info.mask.shape == (948,)
    g = _gen(7); lam = sample_lam(1.0, g); idx = torch.randperm(8, generator=g)      # the draw order: λ, π, positions
    M = torch.randperm(948, generator=g)[:int(948 * (1 - lam))]
    naive = tokens.clone()
    for i in range(8):
        for k in M.tolist(): naive[i, k] = tokens[idx[i], k]
    assert torch.equal(out, naive) and torch.equal(info.index, idx) and info.lam == 1 - len(M) / 948
    fixed = PatchMixer(lam=0.3)
    assert fixed(tokens)[1].lam == pytest.approx(1 - 663 / 948)


def test_patch_geometry_roundtrip():
    spec = torch.randn(2, 1, 798, 128, generator=_gen())
    p = spectrogram_to_patches(spec)
    assert p.shape == (2, 948, 256)
    f, t = 11, 78
    assert torch.equal(p[1, 79 * f + t].view(16, 16), spec[1, 0, 10 * t:10 * t + 16, 10 * f:10 * f + 16].T)
    back = patches_to_spectrogram(p)
    assert torch.allclose(back[:, :, :796, :126], spec[:, :, :796, :126], atol=1e-5)
    mask = torch.zeros(948, dtype=torch.bool); mask[79 * 2 + 5] = True
    pix = token_mask_to_pixels(mask)
    assert pix.shape == (798, 128) and int(pix.sum()) == 100 and bool(pix[50:60, 20:30].all())


def test_mixup():
    x = torch.randn(6, 1, 20, 8, generator=_gen())
    y = torch.arange(6)
    xm, ya, yb, lam = mixup(x, y, lam=0.25, generator=_gen(1))
    idx = torch.randperm(6, generator=_gen(1))
    assert lam == 0.25
    assert torch.allclose(xm, 0.25 * x + 0.75 * x[idx])
    assert torch.equal(ya, y) and torch.equal(yb, y[idx])
    xm2, _, yb2, lam2 = mixup(x, y, generator=_gen(1))        # λ drawn first, then π, from the same generator
    g = _gen(1)
    lam_exp = sample_lam(1.0, g)
    idx2 = torch.randperm(6, generator=g)
    assert lam2 == lam_exp and torch.equal(yb2, y[idx2])
    assert torch.allclose(xm2, lam2 * x + (1 - lam2) * x[idx2])


@pytest.mark.parametrize('seed', range(6))
def test_cutmix_lam_is_kept_area(seed):
    T, Fq = 80, 32
    x = torch.randn(4, 1, T, Fq, generator=_gen(seed)) + 10 * torch.arange(4).view(4, 1, 1, 1)  # distinct samples
    y = torch.arange(4)
    xm, ya, yb, lam = cutmix(x, y, beta=1.0, generator=_gen(seed))
    pasted = (xm != x)                                         # (B, 1, T, F)
    moved = [i for i in range(4) if not torch.equal(yb[i], ya[i])]
    if moved:
        area = int(pasted[moved[0]].sum())
        assert lam == pytest.approx(1 - area / (T * Fq), abs=1e-12)
        box = pasted[moved[0], 0]
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert int(box.sum()) == len(rows) * len(cols)        # a rectangle
        assert torch.equal(xm[moved[0]][pasted[moved[0]]], x[yb[moved[0]]][pasted[moved[0]]])


def test_cutmix_box_clipping():
    t0, t1, f0, f1 = cutmix_box(100, 40, 0.36, generator=_gen(0))   # sides ⌊100·0.8⌋ = 80, ⌊40·0.8⌋ = 32
    assert 0 <= t0 <= t1 <= 100 and 0 <= f0 <= f1 <= 40
    assert t1 - t0 <= 80 and f1 - f0 <= 32
    _, _, _, lam = cutmix(torch.zeros(2, 1, 100, 40), torch.arange(2), lam=0.36, generator=_gen(0))
    assert lam >= 0.36 - 1e-12
    _, _, _, lam1 = cutmix(torch.zeros(2, 1, 100, 40), torch.arange(2), lam=1.0, generator=_gen(0))
    assert lam1 == 1.0


def test_patch_mix_audio():
    "The listenable mix: an empty mask gives a back, a full one b, a time-mode mix is b's sound in b's columns."
    from patchmix_nb.patchmix import patch_mix_audio
    g = _gen(3)
    a, b = torch.randn(128000, generator=g), torch.randn(128000, generator=g)
    inner = slice(400, 127000)  # inside the first and last 25 ms frame
    torch.testing.assert_close(torch.as_tensor(patch_mix_audio(a, b, torch.zeros(948, dtype=torch.bool)))[inner], a[inner])
    torch.testing.assert_close(torch.as_tensor(patch_mix_audio(a, b, torch.ones(948, dtype=torch.bool)))[inner], b[inner])
    mask = torch.zeros(12, 79, dtype=torch.bool)
    mask[:, 40:] = True  # time columns 40.. from b: frames 400.., samples from 400·160 + 400 on are b's alone
    mixed = torch.as_tensor(patch_mix_audio(a, b, mask.reshape(-1)))
    torch.testing.assert_close(mixed[1000:63000], a[1000:63000])
    torch.testing.assert_close(mixed[64400:127000], b[64400:127000])
    with pytest.raises(ValueError, match='differ in length'): patch_mix_audio(a, b[:-1], mask.reshape(-1))


def test_explorer_after_run_all(tmp_path):
    "nbs/11_patchmix.ipynb run top to bottom (Run All): its explorer mixes two different cycles, shown and playable."
    import json
    import os
    from pathlib import Path
    nbformat = pytest.importorskip('nbformat')
    from nbclient import NotebookClient
    nbs = Path(__file__).resolve().parents[1]/'nbs'
    nb = nbformat.read(nbs/'11_patchmix.ipynb', as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('''import json
fa, fb = cycle_fbank(*explorer.cyc_a.value), cycle_fbank(*explorer.cyc_b.value)
fig, wave = explorer.mix()
shown = [o for o in explorer.out.outputs if 'image/png' in o.get('data', {})]
print(json.dumps(dict(a=explorer.cyc_a.value, b=explorer.cyc_b.value, same_fbank=bool(torch.equal(fa, fb)),
                      labels=[int(cycle_row(*explorer.cyc_a.value).label), int(cycle_row(*explorer.cyc_b.value).label)],
                      shown=len(shown), audio=len(explorer.player.value), status=explorer.status.value,
                      differs=[float((cycle_clip(*v) - torch.as_tensor(wave)).abs().max())
                               for v in (explorer.cyc_a.value, explorer.cyc_b.value)], renders=explorer.renders)))'''))
    NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(nbs)}}).execute(
        env=dict(os.environ, MPLBACKEND='module://matplotlib_inline.backend_inline'))
    s = json.loads(nb.cells[-1].outputs[0]['text'])
    assert s['a'] != s['b'] and not s['same_fbank']  # a real pair, not a cycle mixed with itself
    assert s['labels'][0] == s['labels'][1] != 0  # the lesson set a's class to b's: another cycle of that class
    assert s['shown'] == 1 and s['status'] == '' and s['renders'] == 3
    assert s['audio'] == 44 + 2 * 128000  # the mixed 8 s clip in the player, 16-bit WAV
    assert min(s['differs']) > 0.01  # the mix is neither cycle
