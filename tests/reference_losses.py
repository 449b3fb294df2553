"""Referees of the Patch-Mix contrastive loss, kept once for the tests and for 12_losses (which shows their source):
the reference implementation's computation written literally, and a per-anchor loop in Python floats."""
import math

import torch
import torch.nn.functional as F


def reference_patchmix_cl(projection1, projection2, labels_a, lam, index, temperature=0.06, negative_pair='all'):
    "Literal re-implementation of PatchMixConLoss.forward (reference method/patchmix_cl.py), CPU instead of .cuda(); projection1 = targets, projection2 = anchors."
    batch_size = projection1.shape[0]
    projection1, projection2 = F.normalize(projection1), F.normalize(projection2)
    anchor_dot_contrast = torch.div(torch.matmul(projection2, projection1.T), temperature)
    mask_a = torch.eye(batch_size)
    mask_b = torch.zeros(batch_size, batch_size)
    mask_b[torch.arange(batch_size).unsqueeze(1), index.view(-1, 1)] = 1
    mask = lam * mask_a + (1 - lam) * mask_b
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    exp_logits = torch.exp(logits)
    if negative_pair == 'diff_label':
        labels_a = labels_a.contiguous().view(-1, 1)
        logits_mask = torch.ne(labels_a, labels_a.T) + (mask_a.bool() + mask_b.bool())
        exp_logits *= logits_mask.float()
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    loss = -mean_log_prob_pos
    loss = loss.view(1, batch_size)
    return loss.mean()


def naive_patchmix_cl(anchors, targets, lam, index, tau=0.06, labels=None, diff_label=False):
    "−(1/B) Σ_i Σ_j m_ij (s_ij − log Σ_k e^{s_ik}), one anchor at a time, in float64 Python numbers."
    a, t = anchors.detach().double(), targets.detach().double()                    # values only: a referee, no graph
    B = len(a)
    total = 0.0
    for i in range(B):
        s = [float(a[i] @ t[j] / (a[i].norm() * t[j].norm())) / tau for j in range(B)]   # s_ij = cos(a_i, t_j) / τ
        mx = max(s)
        s = [v - mx for v in s]                                                        # row max removed
        pos = {i, int(index[i])}
        den = sum(math.exp(s[k]) for k in range(B)
                  if not diff_label or labels[k] != labels[i] or k in pos)
        for j in range(B):
            m = lam * (j == i) + (1 - lam) * (j == int(index[i]))                    # m_ij
            total += m * (s[j] - math.log(den))
    return -total / B
