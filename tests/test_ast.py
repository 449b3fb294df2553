"""Tests of patchmix_nb.ast: shapes, the Patch-Mix hook, positional-embedding adaptation against a transcription of
the reference code, strict checkpoint loading in the three layouts, and transformers' AST as an independent referee."""
import os

os.environ['HF_HUB_OFFLINE'] = '1'

import argparse

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from patchmix_nb.ast import (AST, AST_CONFIGS, ASTHead, CheckpointError, adapt_pos_embed, ast_config,
                             create_backbone, detect_format, load_pretrained, token_grid, translate_ast,
                             translate_deit, translate_hf)

torch.set_num_threads(2)
TINY = dict(embed_dim=32, depth=2, num_heads=2)          # smaller than ast-tiny: these tests only check plumbing


def tiny_ast(n_frames=798, n_mels=128, **kw) -> AST:
    torch.manual_seed(0)
    return AST(n_frames=n_frames, n_mels=n_mels, **{**TINY, **kw}).eval()


# ---------------------------------------------------------------------------------------------------------------
# The reference algorithm, transcribed from AST's ASTModel.__init__ (YuanGongND/ast, src/models/ast_models.py),
# which the Patch-Mix reference calls with input_fdim=798, input_tdim=128 (swapped, method.md section 3.4).
# ---------------------------------------------------------------------------------------------------------------
def ref_get_shape(fstride, tstride, input_fdim, input_tdim):
    test_input = torch.randn(1, 1, input_fdim, input_tdim)
    test_proj = torch.nn.Conv2d(1, 8, kernel_size=(16, 16), stride=(fstride, tstride))
    test_out = test_proj(test_input)
    return test_out.shape[2], test_out.shape[3]


def ref_imagenet_branch(pos_embed, f_dim, t_dim):
    "ImageNet DeiT branch: square original grid oringal_hw; `<=` cuts; time first, then frequency."
    D = pos_embed.shape[2]
    original_num_patches = pos_embed.shape[1] - 2
    oringal_hw = int(original_num_patches ** 0.5)
    num_patches = f_dim * t_dim
    new_pos_embed = pos_embed[:, 2:, :].detach().reshape(1, original_num_patches, D).transpose(1, 2).reshape(
        1, D, oringal_hw, oringal_hw)
    if t_dim <= oringal_hw:
        new_pos_embed = new_pos_embed[:, :, :, int(oringal_hw / 2) - int(t_dim / 2): int(oringal_hw / 2) - int(t_dim / 2) + t_dim]
    else:
        new_pos_embed = F.interpolate(new_pos_embed, size=(oringal_hw, t_dim), mode='bilinear')
    if f_dim <= oringal_hw:
        new_pos_embed = new_pos_embed[:, :, int(oringal_hw / 2) - int(f_dim / 2): int(oringal_hw / 2) - int(f_dim / 2) + f_dim, :]
    else:
        new_pos_embed = F.interpolate(new_pos_embed, size=(f_dim, t_dim), mode='bilinear')
    new_pos_embed = new_pos_embed.reshape(1, D, num_patches).transpose(1, 2)
    return torch.cat([pos_embed[:, :2, :].detach(), new_pos_embed], dim=1)


def ref_audioset_branch(pos_embed, f_dim, t_dim):
    "AudioSet branch: hard-coded (12, 101) original grid; `<` cuts at 50 - t/2 and 6 - f/2; time first."
    D = pos_embed.shape[2]
    num_patches = f_dim * t_dim
    new_pos_embed = pos_embed[:, 2:, :].detach().reshape(1, 1212, D).transpose(1, 2).reshape(1, D, 12, 101)
    if t_dim < 101:
        new_pos_embed = new_pos_embed[:, :, :, 50 - int(t_dim / 2): 50 - int(t_dim / 2) + t_dim]
    else:
        new_pos_embed = F.interpolate(new_pos_embed, size=(12, t_dim), mode='bilinear')
    if f_dim < 12:
        new_pos_embed = new_pos_embed[:, :, 6 - int(f_dim / 2): 6 - int(f_dim / 2) + f_dim, :]
    elif f_dim > 12:
        new_pos_embed = F.interpolate(new_pos_embed, size=(f_dim, t_dim), mode='bilinear')
    new_pos_embed = new_pos_embed.reshape(1, D, num_patches).transpose(1, 2)
    return torch.cat([pos_embed[:, :2, :].detach(), new_pos_embed], dim=1)


@pytest.mark.parametrize('n_frames,n_mels', [(798, 128), (1024, 128), (1200, 128), (400, 128), (798, 64), (798, 256)])
@pytest.mark.parametrize('mode', ['upstream', 'canonical'])
def test_adapt_pos_embed_audioset_matches_reference(n_frames, n_mels, mode):
    torch.manual_seed(1)
    pe = torch.randn(1, 2 + 12 * 101, 16)
    dst = token_grid(n_frames, n_mels)
    # upstream passes (fdim, tdim) = (frames, mels); canonical AST passes (mels, frames)
    fdim, tdim = (n_frames, n_mels) if mode == 'upstream' else (n_mels, n_frames)
    f_dim, t_dim = ref_get_shape(10, 10, fdim, tdim)
    expected = ref_audioset_branch(pe, f_dim, t_dim)
    got = adapt_pos_embed(pe, (12, 101), dst, mode=mode)
    assert got.shape == (1, 2 + dst[0] * dst[1], 16)
    assert torch.equal(got, expected)


@pytest.mark.parametrize('hw', [24, 14])
@pytest.mark.parametrize('n_frames,n_mels', [(798, 128), (198, 128), (1024, 128)])
@pytest.mark.parametrize('mode', ['upstream', 'canonical'])
def test_adapt_pos_embed_imagenet_matches_reference(hw, n_frames, n_mels, mode):
    torch.manual_seed(2)
    pe = torch.randn(1, 2 + hw * hw, 16)
    dst = token_grid(n_frames, n_mels)
    fdim, tdim = (n_frames, n_mels) if mode == 'upstream' else (n_mels, n_frames)
    f_dim, t_dim = ref_get_shape(10, 10, fdim, tdim)
    assert torch.equal(adapt_pos_embed(pe, (hw, hw), dst, mode=mode), ref_imagenet_branch(pe, f_dim, t_dim))


def test_adapt_pos_embed_paper_case_columns():
    "Spec 3.4: upstream cuts AudioSet time columns 44..55; canonical keeps all 12 rows and columns 11..89."
    f, t = torch.meshgrid(torch.arange(12.), torch.arange(101.), indexing='ij')
    pe = torch.cat([torch.zeros(1, 2, 2), torch.stack([f, t], -1).reshape(1, 1212, 2)], 1)
    can = adapt_pos_embed(pe, (12, 101), (12, 79), 'canonical')[0, 2:].reshape(12, 79, 2)
    assert torch.equal(can[..., 0], f[:, :79]) and torch.equal(can[..., 1], t[:, 11:90])
    up = adapt_pos_embed(pe, (12, 101), (12, 79), 'upstream')[0, 2:]
    k = torch.arange(948)
    assert torch.allclose(up[:, 1], 44 + (k % 12).float(), atol=1e-4)    # column k mod 12 of the cut 44..55


def test_adapt_pos_embed_errors():
    with pytest.raises(ValueError, match='src_grid'):
        adapt_pos_embed(torch.zeros(1, 100, 4), (12, 101), (12, 79))
    with pytest.raises(ValueError, match='mode'):
        adapt_pos_embed(torch.zeros(1, 1214, 4), (12, 101), (12, 79), mode='swapped')


# ---------------------------------------------------------------------------------------------------------------
# Model: shapes, configs, hook
# ---------------------------------------------------------------------------------------------------------------
def test_configs_and_shapes():
    assert set(AST_CONFIGS) == {'ast-base', 'ast-small', 'ast-tiny'}
    assert ast_config('ast-base') == dict(embed_dim=768, depth=12, num_heads=12)
    assert ast_config('ast-small') == dict(embed_dim=384, depth=12, num_heads=6)
    m = AST(**ast_config('ast-tiny'))
    assert m.grid == (12, 79) and m.num_patches == 948 and m.pos_embed.shape == (1, 950, 192)
    assert m.fused_attn
    assert all(b.norm1.eps == 1e-6 for b in m.blocks) and m.norm.eps == 1e-6
    with torch.no_grad():
        z = m.eval()(torch.randn(3, 1, 798, 128))
    assert z.shape == (3, 192) and torch.isfinite(z).all()
    with pytest.raises(ValueError, match='unknown AST config'):
        ast_config('ast-huge')


def test_general_input_size():
    m = tiny_ast(n_frames=300, n_mels=64)
    assert m.grid == token_grid(300, 64) == (5, 29)
    assert m.pos_embed.shape == (1, 2 + 5 * 29, 32)
    assert m(torch.randn(2, 1, 300, 64)).shape == (2, 32)
    with pytest.raises(ValueError, match=r'\(B, 1, 300, 64\)'):
        m(torch.randn(2, 1, 64, 300))


def test_pooling_is_mean_of_cls_and_dist():
    m = tiny_ast(n_frames=98, n_mels=64)
    x = torch.randn(2, 1, 98, 64)
    with torch.no_grad():
        h, info = m.forward_features(x)
        assert h.shape == (2, 2 + m.num_patches, 32) and info == ()
        assert torch.allclose(m(x), (h[:, 0] + h[:, 1]) / 2)


def test_mix_hook_sees_patch_tokens_before_pos_embed():
    m = tiny_ast()
    x = torch.randn(2, 1, 798, 128)
    seen = {}

    def record(tokens):
        seen['tokens'] = tokens.detach().clone()
        return tokens, 'info-a', 7

    with torch.no_grad():
        z, info = m(x, mix=record)
        # the conv on the (B, 1, mel, time) transpose, flattened row-major: no special tokens, no positions
        manual = F.conv2d(x.transpose(2, 3), m.patch_embed.proj.weight, m.patch_embed.proj.bias, stride=10)
        manual = manual.flatten(2).transpose(1, 2)
        assert seen['tokens'].shape == (2, 948, 32)
        assert torch.allclose(seen['tokens'], manual, atol=1e-5)
        assert info == ('info-a', 7)
        assert torch.allclose(z, m(x), atol=1e-6)
        # a changed positional embedding does not change what the hook receives
        m.pos_embed.add_(100.0)
        m(x, mix=record)
        assert torch.allclose(seen['tokens'], manual, atol=1e-5)


def test_mix_hook_effect_and_bad_return():
    m = tiny_ast(n_frames=98, n_mels=64)
    x = torch.randn(2, 1, 98, 64)
    with torch.no_grad():
        swapped, info = m(x, mix=lambda t: t.flip(0))          # every patch from the partner: same as flipping x
        assert info == ()
        assert torch.allclose(swapped, m(x.flip(0)), atol=1e-5)
        with pytest.raises(ValueError, match='mix must return'):
            m(x, mix=lambda t: t[:, :10])


def test_patchmixer_in_the_forward():
    "The one Patch-Mix API inside the forward: (z, (info,)), mixer.info holds λ, π and the mask; mixed tokens reach z."
    from patchmix_nb.patchmix import PatchMixer, PatchMixInfo
    m = tiny_ast()
    x = torch.randn(4, 1, 798, 128)
    mixer = PatchMixer(lam=0.5, grid=m.grid, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, (info,) = m(x, mix=mixer)
        clean = m(x)
    assert isinstance(info, PatchMixInfo) and mixer.info is info
    assert z.shape == (4, 32) and info.index.shape == (4,) and int(info.mask.sum()) == 474 and info.lam == 0.5
    moved = info.index != torch.arange(4)
    assert not torch.allclose(z[moved], clean[moved]) and torch.allclose(z[~moved], clean[~moved], atol=1e-6)


def test_training_step_and_head():
    m = AST(**ast_config('ast-tiny', n_frames=198))
    head = ASTHead(m.embed_dim, 4)
    assert isinstance(head[0], torch.nn.LayerNorm) and head[1].out_features == 4
    opt = torch.optim.Adam([*m.parameters(), *head.parameters()], lr=1e-4)
    x, y = torch.randn(8, 1, 198, 128), torch.randint(0, 4, (8,))
    loss = F.cross_entropy(head(m(x)), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints in the three layouts, made here at tiny sizes
# ---------------------------------------------------------------------------------------------------------------
def deit_tiny_state():
    torch.manual_seed(3)
    deit = timm.create_model('deit_tiny_distilled_patch16_224', pretrained=False, depth=2, embed_dim=32, num_heads=2)
    return deit.state_dict()


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('mode', ['upstream', 'canonical'])
def test_load_deit_layout(tmp_path, suffix, mode):
    sd = deit_tiny_state()
    assert sd['pos_embed'].shape == (1, 2 + 14 * 14, 32) and sd['patch_embed.proj.weight'].shape[1] == 3
    path = tmp_path / f'deit{suffix}'
    (save_file({k: v.contiguous() for k, v in sd.items()}, str(path)) if suffix == '.safetensors'
     else torch.save({'model': sd}, path))
    m = tiny_ast()
    rep = load_pretrained(m, path, pos_embed_mode=mode)
    assert rep.format == 'deit'
    assert sorted(rep.discarded) == ['head.bias', 'head.weight', 'head_dist.bias', 'head_dist.weight']
    assert any('pos_embed' in a and mode in a for a in rep.adapted)
    assert any('summed 3 input channels' in a for a in rep.adapted)
    assert set(rep.loaded) == set(m.state_dict())
    assert torch.equal(m.patch_embed.proj.weight.detach(), sd['patch_embed.proj.weight'].sum(1, keepdim=True))
    assert torch.equal(m.pos_embed.detach(), adapt_pos_embed(sd['pos_embed'], (14, 14), (12, 79), mode))
    for k in ('cls_token', 'dist_token', 'blocks.1.attn.qkv.weight', 'blocks.0.mlp.fc2.bias', 'norm.weight'):
        assert torch.equal(m.state_dict()[k], sd[k]), k


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_round_trip_own_state_dict(tmp_path, suffix):
    a, b = tiny_ast(), AST(n_frames=798, n_mels=128, **TINY).eval()
    path = tmp_path / f'ours{suffix}'
    save_file(a.state_dict(), str(path)) if suffix == '.safetensors' else torch.save(a.state_dict(), path)
    rep = load_pretrained(b, path)
    assert rep.format == 'deit' and rep.discarded == [] and rep.adapted == []
    x = torch.randn(2, 1, 798, 128)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def fake_audioset_state(embed_dim=32, depth=2, n_cls=527):
    "The official AST checkpoint layout at tiny width: DataParallel `module.v.*`, 1214 positions, heads."
    torch.manual_seed(4)
    src = AST(n_frames=1024, n_mels=128, embed_dim=embed_dim, depth=depth, num_heads=2)
    sd = {f'module.v.{k}': v for k, v in src.state_dict().items()}
    sd['module.v.head.weight'], sd['module.v.head.bias'] = torch.randn(1000, embed_dim), torch.randn(1000)
    sd['module.v.head_dist.weight'], sd['module.v.head_dist.bias'] = torch.randn(1000, embed_dim), torch.randn(1000)
    sd['module.mlp_head.0.weight'], sd['module.mlp_head.0.bias'] = torch.ones(embed_dim), torch.zeros(embed_dim)
    sd['module.mlp_head.1.weight'], sd['module.mlp_head.1.bias'] = torch.randn(n_cls, embed_dim), torch.randn(n_cls)
    return sd


@pytest.mark.parametrize('mode', ['upstream', 'canonical'])
def test_load_ast_audioset_layout(tmp_path, mode):
    sd = fake_audioset_state()
    assert sd['module.v.pos_embed'].shape == (1, 1214, 32)
    torch.save(sd, tmp_path / 'audioset_10_10_0.4593.pth')
    m = tiny_ast()
    rep = load_pretrained(m, tmp_path / 'audioset_10_10_0.4593.pth', pos_embed_mode=mode)
    assert rep.format == 'ast'
    assert sorted(rep.discarded) == sorted(['module.v.head.weight', 'module.v.head.bias', 'module.v.head_dist.weight',
                                            'module.v.head_dist.bias', 'module.mlp_head.0.weight',
                                            'module.mlp_head.0.bias', 'module.mlp_head.1.weight',
                                            'module.mlp_head.1.bias'])
    assert rep.adapted == [f'pos_embed: grid (12, 101) -> (12, 79) ({mode})']
    f_dim, t_dim = (79, 12) if mode == 'upstream' else (12, 79)
    assert torch.equal(m.pos_embed.detach(), ref_audioset_branch(sd['module.v.pos_embed'], f_dim, t_dim))
    assert torch.equal(m.state_dict()['blocks.1.attn.qkv.weight'], sd['module.v.blocks.1.attn.qkv.weight'])
    assert torch.equal(m.state_dict()['patch_embed.proj.weight'], sd['module.v.patch_embed.proj.weight'])


def test_detect_format():
    assert detect_format(fake_audioset_state()) == 'ast'
    assert detect_format(deit_tiny_state()) == 'deit'
    assert detect_format({'audio_spectrogram_transformer.layernorm.weight': torch.zeros(1)}) == 'hf'
    with pytest.raises(ValueError, match='unrecognised'):
        detect_format({'fc.weight': torch.zeros(1)})


def test_translators_are_pure():
    sd = fake_audioset_state()
    before = {k: v.clone() for k, v in sd.items()}
    out, discarded, _ = translate_ast(sd)
    assert set(sd) == set(before) and all(torch.equal(sd[k], before[k]) for k in sd)
    assert 'pos_embed' in out and len(discarded) == 8
    d = deit_tiny_state()
    out, _, _ = translate_deit(d)
    assert d['patch_embed.proj.weight'].shape[1] == 3 and out['patch_embed.proj.weight'].shape[1] == 1


# ---- strictness -----------------------------------------------------------------------------------------------
def _expect_error(model, sd, tmp_path, *needles):
    path = tmp_path / 'bad.pth'
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(model, path)
    msg = str(e.value)
    assert str(path) in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_strict_missing_unexpected_misshaped(tmp_path):
    sd = fake_audioset_state()
    del sd['module.v.blocks.0.norm1.bias']
    _expect_error(tiny_ast(), sd, tmp_path, 'missing keys', 'blocks.0.norm1.bias')

    sd = fake_audioset_state()
    sd['module.v.blocks.0.attn.extra'] = torch.zeros(3)
    sd['module.aux.weight'] = torch.zeros(3)                       # not on the allow-list of discarded heads
    _expect_error(tiny_ast(), sd, tmp_path, 'unexpected keys', 'blocks.0.attn.extra', 'module.aux.weight')

    sd = fake_audioset_state()
    sd['module.v.blocks.1.mlp.fc1.weight'] = torch.zeros(64, 33)
    _expect_error(tiny_ast(), sd, tmp_path, 'mis-shaped keys', 'blocks.1.mlp.fc1.weight', '(64, 33)', '(128, 32)')

    # a deeper checkpoint: the extra blocks are unexpected, not silently dropped
    sd = fake_audioset_state(depth=3)
    _expect_error(tiny_ast(), sd, tmp_path, 'unexpected keys (12)', 'blocks.2.attn.qkv.weight')

    # a wider checkpoint: every tensor mis-shaped, including pos_embed
    sd = fake_audioset_state(embed_dim=48)
    _expect_error(tiny_ast(), sd, tmp_path, 'mis-shaped keys', 'pos_embed', 'cls_token')


def test_strict_nothing_loaded_on_error(tmp_path):
    m = tiny_ast()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sd = fake_audioset_state()
    del sd['module.v.norm.weight']
    _expect_error(m, sd, tmp_path, 'norm.weight')
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_weights_only_refuses_pickled_objects(tmp_path):
    torch.save({'model': tiny_ast().state_dict(), 'args': argparse.Namespace(lr=1.0)}, tmp_path / 'pickled.pth')
    with pytest.raises(CheckpointError, match='weights_only'):
        load_pretrained(tiny_ast(), tmp_path / 'pickled.pth')
    with pytest.raises(CheckpointError, match='not found'):
        load_pretrained(tiny_ast(), tmp_path / 'absent.pth')


# ---- Hugging Face: an independent referee ------------------------------------------------------------------------
transformers = pytest.importorskip('transformers')


def hf_tiny(max_length=198, num_mel_bins=64, fstride=10, tstride=10, hidden=32, layers=2, heads=2):
    torch.manual_seed(5)
    cfg = transformers.ASTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                 intermediate_size=4 * hidden, max_length=max_length, num_mel_bins=num_mel_bins,
                                 frequency_stride=fstride, time_stride=tstride, layer_norm_eps=1e-6, num_labels=5)
    hf = transformers.ASTForAudioClassification(cfg).eval()
    with torch.no_grad():                                      # HF zero-inits these; make them count
        emb = hf.audio_spectrogram_transformer.embeddings
        for p in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            p.normal_(0, 0.5)
    return hf


def test_hf_key_names_are_what_we_translate():
    "The real names, from an instantiated model, in both spellings (save_pretrained/Hub and in-memory)."
    hf = hf_tiny()
    names = set(hf.state_dict())
    assert 'audio_spectrogram_transformer.embeddings.distillation_token' in names
    assert 'audio_spectrogram_transformer.embeddings.patch_embeddings.projection.weight' in names
    out, discarded, _ = translate_hf(hf.state_dict())
    assert sorted(discarded) == sorted(k for k in names if k.startswith('classifier.'))
    assert set(out) == set(tiny_ast(198, 64).state_dict())


@pytest.mark.parametrize('save', ['save_pretrained', 'safetensors_file', 'bin_in_memory_names', 'ast_model'])
@pytest.mark.parametrize('strides', [(10, 10), (8, 12)])
def test_hf_referee_same_output(tmp_path, save, strides):
    hf = hf_tiny(fstride=strides[0], tstride=strides[1])
    if save == 'save_pretrained':
        hf.save_pretrained(tmp_path)                           # Hub names: encoder.layer.i.attention.attention.query
        path, fmt = tmp_path, 'auto'
    elif save == 'safetensors_file':
        hf.save_pretrained(tmp_path / 'hf')
        path, fmt = tmp_path / 'hf' / 'model.safetensors', 'hf'
    elif save == 'bin_in_memory_names':
        torch.save(hf.state_dict(), tmp_path / 'pytorch_model.bin')   # transformers 5 names: layers.i.attention.q_proj
        path, fmt = tmp_path / 'pytorch_model.bin', 'auto'
    else:
        torch.save(hf.audio_spectrogram_transformer.state_dict(), tmp_path / 'ast_model.bin')   # no prefix, no head
        path, fmt = tmp_path / 'ast_model.bin', 'hf'
    ours = AST(n_frames=198, n_mels=64, embed_dim=32, depth=2, num_heads=2, stride=strides).eval()
    rep = load_pretrained(ours, path, format=fmt)
    assert rep.format == 'hf' and rep.adapted[0].startswith('query/key/value concatenated')
    assert not any(a.startswith('pos_embed') for a in rep.adapted)
    x = torch.randn(3, 198, 64)                                # HF input: (B, time, mel)
    with torch.no_grad():
        ref = hf.audio_spectrogram_transformer(x).pooler_output
        got = ours(x.unsqueeze(1))                             # ours: (B, 1, time, mel)
        assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
        # the discarded classifier equals HF's on our pooled features: an end-to-end check
        head = ASTHead(32, 5)
        head[0].weight.copy_(hf.classifier.layernorm.weight); head[0].bias.copy_(hf.classifier.layernorm.bias)
        head[0].eps = hf.config.layer_norm_eps
        head[1].weight.copy_(hf.classifier.dense.weight); head[1].bias.copy_(hf.classifier.dense.bias)
        assert torch.allclose(head(got), hf(x).logits, atol=1e-5)


def test_hf_config_stride_mismatch_and_pos_adaptation(tmp_path):
    hf = hf_tiny(max_length=298, num_mel_bins=128)             # grid (12, 29)
    hf.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match='strides'):
        load_pretrained(AST(n_frames=198, n_mels=128, embed_dim=32, depth=2, num_heads=2, stride=(10, 12)), tmp_path)
    ours = AST(n_frames=198, n_mels=128, embed_dim=32, depth=2, num_heads=2)   # grid (12, 19): cut 29 -> 19
    rep = load_pretrained(ours, tmp_path, pos_embed_mode='canonical')
    assert 'pos_embed: grid (12, 29) -> (12, 19) (canonical)' in rep.adapted
    assert not any('layer_norm_eps' in a for a in rep.adapted)      # hf_tiny uses 1e-6, like the model
    src = hf.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    assert torch.equal(ours.pos_embed.detach(), adapt_pos_embed(src, (12, 29), (12, 19), 'canonical'))


def test_hf_layer_norm_eps_difference_is_reported(tmp_path):
    hf = hf_tiny()
    hf.config.layer_norm_eps = 1e-12                           # the Hub AST checkpoints' value
    hf.save_pretrained(tmp_path)
    rep = load_pretrained(AST(n_frames=198, n_mels=64, embed_dim=32, depth=2, num_heads=2), tmp_path)
    assert 'layer_norm_eps: checkpoint config 1e-12, model 1e-06 (kept the model\'s)' in rep.adapted


# ---------------------------------------------------------------------------------------------------------------
# CNN baselines and the factory
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name,dim', [('resnet18', 512), ('efficientnet_b0', 1280)])
def test_cnn_backbones(name, dim):
    net = create_backbone(name).eval()
    assert net.embed_dim == dim
    with torch.no_grad():
        assert net(torch.randn(2, 1, 98, 64)).shape == (2, dim)
    with pytest.raises(ValueError, match='Patch-Mix'):
        net(torch.randn(2, 1, 98, 64), mix=lambda t: t)


def test_create_backbone_ast():
    m = create_backbone('ast-tiny', n_frames=198, n_mels=64)
    assert isinstance(m, AST) and m.embed_dim == 192 and m.grid == (5, 19) and len(m.blocks) == 4
    assert create_backbone('ast-small').embed_dim == 384
    with pytest.raises(ValueError, match='unknown AST config'):
        create_backbone('ast-large')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_forward_and_load(tmp_path):
    sd = fake_audioset_state()
    torch.save(sd, tmp_path / 'as.pth')
    m = tiny_ast().cuda()
    load_pretrained(m, tmp_path / 'as.pth')
    z, (info,) = m(torch.randn(2, 1, 798, 128, device='cuda'), mix=lambda t: (t, t.device.type))
    assert z.device.type == 'cuda' and info == 'cuda'


# ---------------------------------------------------------------------------------------------------------------
# pad='mask': tokens of padding left out of attention
# ---------------------------------------------------------------------------------------------------------------
def padded_input(B=3, lengths=(300, 798, 120), seed=1):
    "B random inputs whose frames from lengths[i] on hold one value (zero padding's log floor, -1.3 here)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, 798, 128, generator=g)
    for i, n in enumerate(lengths): x[i, :, n:] = -1.3
    return x


def kept_columns(n: int, stride: int = 10, patch: int = 16, n_time: int = 79) -> torch.Tensor:
    "Time columns t whose frames [stride t, stride t + patch) reach into the first n frames, by hand."
    return torch.tensor([stride * t < n for t in range(n_time)])


@pytest.mark.parametrize('pool', ['cls', 'mean'])
def test_mask_padding_leaves_padding_out(pool):
    from patchmix_nb.ast import padded_frames
    m = tiny_ast(pool=pool, mask_padding=True)
    x = padded_input()
    assert padded_frames(x).sum(1).tolist() == [498, 0, 678]
    keep = m.token_keep(x)
    for i, n in enumerate((300, 798, 120)):
        assert torch.equal(keep[i].view(12, 79), kept_columns(n).expand(12, 79))
    out = torch.ones(3, 798, dtype=torch.bool)                     # frames that no kept token covers
    for i in range(3):
        for t in keep[i].view(12, 79)[0].nonzero().flatten().tolist(): out[i, 10 * t:10 * t + 16] = False
    y = x.clone()
    y[:, 0][out] = 5.0                                             # another padding value, under no kept token
    with torch.no_grad():
        z, z_other = m(x), m(y)
        plain = tiny_ast(pool=pool)                                # same weights (same seed), no mask
        z_plain = plain(x)
    assert torch.equal(z, z_other)
    assert torch.allclose(z[1], z_plain[1], atol=1e-5)             # no padding: the masked model is the plain one
    assert (z[[0, 2]] - z_plain[[0, 2]]).abs().max() > 1e-3        # with padding it is not
    y[0, 0, 700:] = torch.randn(98, 128)                           # content in the padding is attended
    with torch.no_grad(): assert not torch.allclose(m(y)[0], z[0], atol=1e-4)


def test_mask_padding_flags_follow_patchmix():
    "A mixed-in token brings its own keep flag: the attention each block gets is the mixed flags, checked by hand."
    from patchmix_nb.hears import record_attention
    from patchmix_nb.patchmix import PatchMixer, _apply
    m = tiny_ast(mask_padding=True)
    x = padded_input()
    for mode in ('random', 'time'):
        mixer = PatchMixer(lam=0.5, mode=mode, grid=m.grid, generator=torch.Generator().manual_seed(2))
        with torch.no_grad(), record_attention(m) as maps:
            _, (info,) = m(x, mix=mixer)
        want = _apply(m.token_keep(x)[..., None], info.index, info.mask)[..., 0]      # (B, N)
        assert not torch.equal(want, m.token_keep(x))              # the mix moved some flags
        for A in maps:                                             # (B, H, 2 + N, 2 + N)
            assert torch.equal(A[:, :, :, 2:].sum((1, 2)) > 0, want)   # attended exactly where the flag is kept
            assert torch.allclose(A.sum(-1), torch.ones_like(A.sum(-1)), atol=1e-5)


def test_mask_padding_needs_ast_and_trains(tmp_path):
    from patchmix_nb.config import check_config, make_config, wave_pad
    with pytest.raises(ValueError, match="pad 'mask' leaves the padding out of AST's attention and needs an AST "
                                         "model, got model 'beats-tiny'"):
        check_config(make_config(model='beats-tiny', pad='mask'))
    with pytest.raises(ValueError, match="pad must be one of repeat, zero, mask; got 'cut'"):
        check_config(make_config(pad='cut'))
    assert [wave_pad(make_config(pad=p)) for p in ('repeat', 'zero', 'mask')] == ['repeat', 'zero', 'zero']
