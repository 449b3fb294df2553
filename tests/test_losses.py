"Tests of patchmix_nb.losses: mixed CE, the Patch-Mix contrastive loss (§5.3), projector and target types."
import math
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from patchmix_nb.losses import (Projector, TARGET_TYPES, contrastive_logits, contrastive_targets, mix_ce_loss,
                                patchmix_ce_loss, patchmix_contrastive_loss, positive_mask, soft_positive_matrix)
from patchmix_nb.patchmix import PatchMixer
from reference_losses import naive_patchmix_cl as naive_loss, reference_patchmix_cl as reference_loss


def _batch(B=8, D=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.randperm(B, generator=g)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('lam', [0.0, 0.3006, 0.5, 0.9, 1.0])
def test_contrastive_equals_naive_and_reference(seed, lam):
    a, t, index = _batch(seed=seed)
    L = patchmix_contrastive_loss(a, t, lam, index)
    assert L.dtype == torch.float32 and L.ndim == 0
    assert float(L) == pytest.approx(naive_loss(a, t, lam, index), abs=1e-5)
    assert float(L) == pytest.approx(float(reference_loss(t, a, None, lam, index)), abs=1e-5)


@pytest.mark.parametrize('seed', range(4))
def test_diff_label_equals_naive_and_reference(seed):
    a, t, index = _batch(B=12, seed=seed)
    labels = torch.randint(0, 4, (12,), generator=torch.Generator().manual_seed(seed))
    L = patchmix_contrastive_loss(a, t, 0.4, index, labels=labels, negative_pair='diff_label')
    assert float(L) == pytest.approx(naive_loss(a, t, 0.4, index, labels=labels.tolist(), diff_label=True), abs=1e-5)
    assert float(L) == pytest.approx(float(reference_loss(t, a, labels, 0.4, index, negative_pair='diff_label')), abs=1e-5)
    assert float(L) <= float(patchmix_contrastive_loss(a, t, 0.4, index)) + 1e-6   # fewer negatives, smaller loss


def test_diff_label_behaviour():
    a, t, index = _batch(B=6)
    lam = 0.3
    # distinct labels: nothing dropped
    L_all = patchmix_contrastive_loss(a, t, lam, index)
    L_d = patchmix_contrastive_loss(a, t, lam, index, labels=torch.arange(6), negative_pair='diff_label')
    assert float(L_d) == pytest.approx(float(L_all), abs=1e-6)
    # one label for all: only the positives i and π(i) stay in the denominator
    L_same = patchmix_contrastive_loss(a, t, lam, index, labels=torch.zeros(6, dtype=torch.long), negative_pair='diff_label')
    s = contrastive_logits(a, t)
    keep = positive_mask(index)
    expect = -(soft_positive_matrix(lam, index) * (s - s.masked_fill(~keep, -math.inf).logsumexp(1, keepdim=True))).sum(1).mean()
    assert float(L_same) == pytest.approx(float(expect), abs=1e-6)
    # a positive sharing the anchor's label is kept (the reference adds the positive mask back)
    labels = torch.zeros(6, dtype=torch.long)
    labels[3:] = 1
    L_mixed = patchmix_contrastive_loss(a, t, lam, index, labels=labels, negative_pair='diff_label')
    assert float(L_mixed) == pytest.approx(naive_loss(a, t, lam, index, labels=labels.tolist(), diff_label=True), abs=1e-5)
    with pytest.raises(ValueError, match='labels'):
        patchmix_contrastive_loss(a, t, lam, index, negative_pair='diff_label')
    with pytest.raises(ValueError, match='negative_pair'):
        patchmix_contrastive_loss(a, t, lam, index, negative_pair='same')


def test_shape_errors():
    a, t, index = _batch()
    with pytest.raises(ValueError, match='anchors and targets'):
        patchmix_contrastive_loss(a, t[:4], 0.5, index)
    with pytest.raises(ValueError, match='index'):
        patchmix_contrastive_loss(a, t, 0.5, index[:4])


def test_soft_positive_matrix():
    index = torch.tensor([2, 1, 0, 3])
    m = soft_positive_matrix(0.25, index)
    expect = torch.tensor([[0.25, 0, 0.75, 0], [0, 1, 0, 0], [0.75, 0, 0.25, 0], [0, 0, 0, 1]])
    assert torch.allclose(m, expect)
    assert torch.equal(positive_mask(index), expect > 0)
    assert torch.equal(positive_mask(index), torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]).bool())


def test_temperature_and_scale_invariance():
    a, t, index = _batch()
    L1 = patchmix_contrastive_loss(a, t, 0.5, index, temperature=0.1)
    L2 = patchmix_contrastive_loss(3 * a, 0.5 * t, 0.5, index, temperature=0.1)   # L2 normalised: scale-free
    assert float(L1) == pytest.approx(float(L2), abs=1e-6)
    assert float(L1) == pytest.approx(naive_loss(a, t, 0.5, index, tau=0.1), abs=1e-5)


def test_float32_under_autocast():
    a, t, index = _batch(B=4, D=8)
    lin = nn.Linear(8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a16 = lin(a)
        t16 = lin(t)
        L = patchmix_contrastive_loss(a16, t16, 0.3, index)
        ce = patchmix_ce_loss(a16[:, :4], torch.tensor([0, 1, 2, 3]), torch.tensor([1, 1, 0, 3]), 0.3)
    assert a16.dtype == torch.bfloat16
    assert L.dtype == torch.float32 and ce.dtype == torch.float32
    ref = patchmix_contrastive_loss(a16.detach().float(), t16.detach().float(), 0.3, index)
    assert L.item() == pytest.approx(ref.item(), abs=1e-6)


def test_mixed_ce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    y_a, y_b = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 3, 0, 1, 2, 2])
    lam = 0.3006
    nll = -logits.log_softmax(1)
    expect = (lam * nll[torch.arange(6), y_a] + (1 - lam) * nll[torch.arange(6), y_b]).mean()
    assert float(patchmix_ce_loss(logits, y_a, y_b, lam)) == pytest.approx(float(expect), abs=1e-6)
    assert float(mix_ce_loss(logits, y_a, y_b, lam)) == pytest.approx(float(expect), abs=1e-6)
    assert float(patchmix_ce_loss(logits, y_a, y_b, 1.0)) == pytest.approx(float(F.cross_entropy(logits, y_a)), abs=1e-6)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    expect_w = lam * F.cross_entropy(logits, y_a, weight=w) + (1 - lam) * F.cross_entropy(logits, y_b, weight=w)
    assert float(mix_ce_loss(logits, y_a, y_b, lam, weight=w)) == pytest.approx(float(expect_w), abs=1e-6)


def test_projector_structure():
    p = Projector()
    assert [type(m).__name__ for m in p] == ['Linear', 'BatchNorm1d', 'ReLU', 'Linear']
    assert (p.linear1.in_features, p.linear1.out_features, p.linear2.out_features) == (768, 768, 768)
    assert p.bn.num_features == 768
    small = Projector(16, 8, 4)
    assert small(torch.randn(3, 16)).shape == (3, 4)


def _step(target_type, anchors_through_projector=True):
    "One CL step with a linear 'encoder'; returns (z_clean, encoder, projector) after backward of L_CL alone."
    torch.manual_seed(0)
    B, D = 8, 16
    enc, proj = nn.Linear(D, D), Projector(D, D, D)
    x = torch.randn(B, D)
    z = enc(x)
    z.retain_grad()
    plan = PatchMixer(lam=0.5, generator=torch.Generator().manual_seed(1))(torch.zeros(B, D, 1))[1]
    z_mix = enc(torch.where(plan.mask, x[plan.index], x))
    anchors = proj(z_mix) if anchors_through_projector else z_mix
    targets = contrastive_targets(z, proj, target_type)
    patchmix_contrastive_loss(anchors, targets, plan.lam, plan.index).backward()
    return z, enc, proj


def _g(t):
    return 0.0 if t is None else float(t.abs().sum())


def test_target_types_gradients():
    z, enc, proj = _step('grad_block')
    assert z.grad is None or _g(z.grad) == 0.0                  # stop-grad on the clean output
    assert _g(enc.weight.grad) > 0 and _g(proj.linear1.weight.grad) > 0   # mixed pass trains both
    z, _, _ = _step('grad_flow')
    assert _g(z.grad) > 0
    z, _, _ = _step('project_block')
    assert z.grad is None or _g(z.grad) == 0.0
    z, _, _ = _step('project_flow')
    assert _g(z.grad) > 0


def test_projector_gets_grad_via_targets_only_under_project_flow():
    for tt in TARGET_TYPES:
        _, _, proj = _step(tt, anchors_through_projector=False)
        got = _g(proj.linear1.weight.grad) > 0
        assert got == (tt == 'project_flow'), tt


def test_contrastive_targets_values_and_errors():
    z = torch.randn(4, 8, requires_grad=True)
    proj = Projector(8, 8, 8).eval()
    assert contrastive_targets(z, target_type='grad_flow') is z
    tb = contrastive_targets(z)
    assert torch.equal(tb, z) and not tb.requires_grad
    pb = contrastive_targets(z, proj, 'project_block')
    assert torch.allclose(pb, proj(z)) and not pb.requires_grad
    assert contrastive_targets(z, proj, 'project_flow').requires_grad
    with pytest.raises(ValueError, match='projector'):
        contrastive_targets(z, None, 'project_flow')
    with pytest.raises(ValueError, match='target_type'):
        contrastive_targets(z, proj, 'nope')


def test_loss_minimum_direction():
    "Anchors equal to the soft mixture of targets give a lower loss than random anchors."
    _, t, index = _batch(B=8, D=64, seed=3)
    lam = 0.6
    good = lam * F.normalize(t) + (1 - lam) * F.normalize(t)[index]
    bad = torch.randn(8, 64, generator=torch.Generator().manual_seed(9))
    assert float(patchmix_contrastive_loss(good, t, lam, index)) < float(patchmix_contrastive_loss(bad, t, lam, index))
