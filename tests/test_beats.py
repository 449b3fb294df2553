"""Tests of patchmix_nb.beats: the features of a checkpoint in the official BEATs format against SpeechBrain's port of
the official code (the referee), BEATs' fbank, strict loading (every bad key named), the token grid under Patch-Mix,
the training-time details (gradient decay, the explicit attention path), and what a beats run trains on: BEATs' own
fbank of each cycle, in a feature cache of its own."""
import math

import pytest
import torch

from patchmix_nb.ast import CheckpointError
from patchmix_nb.beats import BEATs, beats_config, beats_fbank, load_beats, relative_bucket
from patchmix_nb.patchmix import PatchMixer

torch.set_num_threads(2)

# Configs that take every branch of the official code: iter3's (deep norm, gated relative bias, 512 -> D projection),
# a plain post-norm one (no relative bias, no gate, conv bias, no projection, relu, odd conv kernel) and a pre-norm one.
TINY = beats_config('beats-tiny')
PLAIN = beats_config('beats-tiny', deep_norm=False, relative_position_embedding=False, gru_rel_pos=False,
                     conv_bias=True, embed_dim=64, activation_fn='relu', conv_pos=15, conv_pos_groups=2)
PRENORM = beats_config('beats-tiny', deep_norm=False, layer_norm_first=True, encoder_layers=3)


def official_checkpoint(path, cfg: dict, seed: int = 0, scale: float = 0.2) -> dict:
    """Write `{'cfg', 'model'}` as the official code saves it, with every tensor perturbed (LayerNorms, gates and biases
    too, so that no branch hides behind an identity init); return the state dict."""
    torch.manual_seed(seed)
    sd = BEATs(cfg, n_frames=200).state_dict()
    g = torch.Generator().manual_seed(seed)
    sd = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in sd.items()}
    shared = 'encoder.layers.0.self_attn.relative_attention_bias.weight'      # one table, stored once per layer
    for k in sd:
        if k.endswith('relative_attention_bias.weight'): sd[k] = sd[shared]
    torch.save({'cfg': dict(cfg), 'model': sd}, path)
    return sd


class Payload:
    "An arbitrary object in a checkpoint: torch.load(weights_only=True) refuses to build it."


@pytest.fixture(scope='module')
def sb_beats():
    return pytest.importorskip('speechbrain.lobes.models.beats', reason='speechbrain (dev dependency) not installed')


# --------------------------------------------------------------------------------------------------------------------
# Against the official implementation (SpeechBrain 1.1.2's port of microsoft/unilm beats/BEATs.py + backbone.py)
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name, cfg', [('iter3', TINY), ('plain', PLAIN), ('prenorm', PRENORM)])
def test_features_match_official_port(tmp_path, sb_beats, name, cfg):
    """extract_features(wave) equals the official extract_features(wave)[0] on a checkpoint in the official format.
    Tolerance: 1e-5 of the features' scale (their max |value|; the final LayerNorm keeps it near 1-4). Both compute in
    float32 with the same operations in a different order (the official softmax subtracts the row max and rescales
    by 32; we call scaled_dot_product_attention): measured differences are about 1e-6, about 10 float32 epsilons."""
    path = tmp_path / f'{name}.pt'
    official_checkpoint(path, cfg)
    ours = load_beats(path).eval()
    ref = sb_beats.BEATs(str(path), freeze=True).eval()                      # loads it strictly, as the official code
    g = torch.Generator().manual_seed(1)
    for n in (24000, 36800):                                                  # 1.5 s and 2.3 s: 9 and 14 time columns
        wave = 0.1 * torch.randn(2, n, generator=g)
        with torch.no_grad():
            a = ours.extract_features(wave)
            # SpeechBrain's extract_features needs wav_lens (an all-False padding mask = none) ...
            b = ref.extract_features(wave, torch.ones(2))[0]
            # ... and, unlike the official code, skips the encoder's final LayerNorm of pre-norm configs
            if cfg['layer_norm_first']: b = ref.encoder.layer_norm(b)
        assert a.shape == b.shape == (2, (1 + (n - 400) // 160) // 16 * 8, cfg['encoder_embed_dim'])
        scale = float(b.abs().max())
        assert 0.5 < scale < 20
        assert float((a - b).abs().max()) <= 1e-5 * scale, (name, n, float((a - b).abs().max()), scale)


def test_fbank_matches_official_preprocess(sb_beats):
    "BEATs' fbank (×2^15, povey, (x - 15.41663) / (2 · 6.55582)) equals the official preprocess bit for bit."
    wave = 0.3 * torch.randn(2, 16000 * 8, generator=torch.Generator().manual_seed(0))
    ref = sb_beats.BEATs.preprocess(None, wave)
    ours = beats_fbank(wave)
    assert ours.shape == (2, 798, 128)
    assert torch.equal(ours, ref)
    assert torch.equal(beats_fbank(wave[0]), ref[0])


def test_full_size_layout_matches_official_port(sb_beats):
    "At iter3 width (768, 12 heads, 320 buckets, conv 128/16) our encoder has the official keys and shapes."
    cfg = beats_config('beats', encoder_layers=2)                             # per-layer shapes do not depend on L
    ref = sb_beats.TransformerEncoder(sb_beats.BEATsConfig(cfg)).state_dict()
    rename = {'parametrizations.weight.original0': 'weight_g', 'parametrizations.weight.original1': 'weight_v'}
    ref = {next((k.replace(a, b) for a, b in rename.items() if k.endswith(a)), k): tuple(v.shape)
           for k, v in ref.items()}
    with torch.device('meta'):
        ours = {k: tuple(v.shape) for k, v in BEATs(cfg).encoder.state_dict().items()}
    assert ours == ref


# --------------------------------------------------------------------------------------------------------------------
# The fbank, the sizes and the buckets
# --------------------------------------------------------------------------------------------------------------------
def test_fbank_shift_from_ast_and_errors():
    "The 2^15 scale shifts every raw log energy by ln 2^30 (same window): BEATs' numbers are not AST's."
    import torchaudio.compliance.kaldi as kaldi
    wave = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    raw = beats_fbank(wave, mean=0.0, std=0.5)                                 # (x - 0) / (2 · 0.5) = x
    unscaled = kaldi.fbank(wave[None], num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
    live = unscaled > -15                                                      # not at Kaldi's floor log(eps)
    assert live.float().mean() > 0.9
    torch.testing.assert_close((raw - unscaled)[live], torch.full_like(raw[live], 30 * math.log(2)), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r'\(B, T\)'):
        beats_fbank(torch.zeros(1, 1, 16000))


def test_sizes_and_config():
    with torch.device('meta'):
        assert sum(p.numel() for p in BEATs('beats').parameters()) == 90_311_792
    tiny = BEATs('beats-tiny')
    assert tiny.grid == (8, 49) and tiny.num_patches == 392 and tiny.num_features == 64
    assert BEATs('beats-tiny', n_frames=198).grid == (8, 12)
    assert beats_config({'encoder_layers': 3})['max_distance'] == 1280          # official default under a bare cfg
    with pytest.raises(ValueError, match='beats-tiny'):
        beats_config('beats-small')
    with pytest.raises(ValueError, match='deep_norm and layer_norm_first'):
        BEATs('beats-tiny', layer_norm_first=True)
    with pytest.raises(ValueError, match='activation_fn'):
        BEATs('beats-tiny', activation_fn='glu')


def test_relative_buckets():
    "T5-style buckets: exact below 80 per side, log-spaced to 800, clipped; sign in the upper half."
    d = torch.arange(-79, 80)
    assert torch.equal(relative_bucket(d), d.abs() + 160 * (d > 0))
    assert relative_bucket(torch.tensor(800)).item() == 319 and relative_bucket(torch.tensor(-10**6)).item() == 159
    assert relative_bucket(torch.tensor(80)).item() == 240                     # first log bucket right after the exact
    far = relative_bucket(torch.arange(80, 800))
    assert (far.diff() >= 0).all() and far.max().item() <= 319


# --------------------------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------------------------
def test_load_beats_names_every_bad_key(tmp_path):
    path = tmp_path / 'bad.pt'
    sd = official_checkpoint(tmp_path / 'good.pt', TINY)
    del sd['encoder.layer_norm.bias'], sd['encoder.layers.1.fc2.weight']
    sd['encoder.extra.weight'] = torch.zeros(3)
    sd['patch_embedding.weight'] = torch.zeros(32, 1, 8, 8)
    torch.save({'cfg': TINY, 'model': sd}, path)
    with pytest.raises(CheckpointError) as e:
        load_beats(path)
    msg = str(e.value)
    assert msg.startswith(f'{path}: beats checkpoint does not fit the BEATs its cfg describes (2 layers, 64 wide)')
    assert 'missing keys (2): encoder.layer_norm.bias, encoder.layers.1.fc2.weight' in msg
    assert 'unexpected keys (1): encoder.extra.weight' in msg
    assert 'mis-shaped keys (1): patch_embedding.weight: checkpoint (32, 1, 8, 8) vs model (32, 1, 16, 16)' in msg
    assert '\n' not in msg


def test_load_beats_cfg_decides_the_architecture(tmp_path):
    "A 3-layer pre-norm cfg builds a 3-layer pre-norm model; the same tensors under iter3's cfg do not fit."
    sd = official_checkpoint(tmp_path / 'pre.pt', PRENORM)
    m = load_beats(tmp_path / 'pre.pt')
    assert len(m.encoder.layers) == 3 and m.encoder.pre_norm and m.cfg['layer_norm_first']
    assert m.load_report.format == 'beats' and len(m.load_report.loaded) == len(sd)
    torch.save({'cfg': TINY, 'model': sd}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match=r'unexpected keys \(\d+\): encoder\.layers\.2\.'):
        load_beats(tmp_path / 'other.pt')


def test_load_beats_bad_files(tmp_path):
    def fails(obj, match, name='x.pt'):
        p = tmp_path / name
        if isinstance(obj, bytes): p.write_bytes(obj)
        elif obj is not None: torch.save(obj, p)
        with pytest.raises(CheckpointError, match=match) as e:
            load_beats(p)
        assert str(e.value).startswith(str(p)) and '\n' not in str(e.value)

    fails(None, 'checkpoint file not found', 'missing.pt')
    fails(b'', 'empty file', 'empty.pt')
    fails(b'not a checkpoint', r'cannot read with torch.load\(weights_only=True\)', 'text.pt')
    sd = BEATs(TINY, n_frames=200).state_dict()
    fails(sd, "a dict with 'cfg' \\(dict\\) and 'model'")                      # a bare state dict: no cfg
    fails({'cfg': TINY, 'model': {**sd, 'x': 1.0}}, "'model' must map names to tensors")
    fails({'cfg': {**TINY, 'layer_norm_first': True}, 'model': sd}, 'its cfg does not describe a BEATs model')
    fails({'cfg': {**TINY, 'encoder_embed_dim': 66}, 'model': sd}, 'its cfg does not describe a BEATs model')
    fails({'cfg': TINY, 'model': sd, 'extra': Payload()}, r'cannot read with torch.load\(weights_only=True\)')


def test_finetuned_predictor_discarded_and_parametrized_names(tmp_path):
    "A fine-tuned checkpoint's AudioSet predictor is discarded (and listed); weight-norm names of the port are read."
    sd = official_checkpoint(tmp_path / 'a.pt', TINY)
    head = {'predictor.weight': torch.zeros(527, 64), 'predictor.bias': torch.zeros(527)}
    torch.save({'cfg': {**TINY, 'finetuned_model': True}, 'model': {**sd, **head}}, tmp_path / 'ft.pt')
    m = load_beats(tmp_path / 'ft.pt')
    assert m.load_report.discarded == ['predictor.bias', 'predictor.weight']
    torch.save({'cfg': TINY, 'model': {**sd, **head}}, tmp_path / 'head.pt')  # not fine-tuned: a head is unexpected
    with pytest.raises(CheckpointError, match=r'unexpected keys \(2\): predictor.bias, predictor.weight'):
        load_beats(tmp_path / 'head.pt')
    port = {k.replace('weight_g', 'parametrizations.weight.original0').replace(
        'weight_v', 'parametrizations.weight.original1'): v for k, v in sd.items()}
    torch.save({'cfg': TINY, 'model': port}, tmp_path / 'port.pt')
    m2 = load_beats(tmp_path / 'port.pt')
    assert m2.load_report.adapted == ['renamed 2 weight-norm tensors']
    assert torch.equal(m2.encoder.pos_conv[0].weight_v, sd['encoder.pos_conv.0.weight_v'])


# --------------------------------------------------------------------------------------------------------------------
# The token grid under Patch-Mix, and training-time details
# --------------------------------------------------------------------------------------------------------------------
def test_patchmixer_time_mode_replaces_time_columns():
    "PatchMixer(mode='time') on BEATs' grid replaces whole time columns: runs of 8 in BEATs' sequence order."
    torch.manual_seed(0)
    m = BEATs('beats-tiny', n_frames=198).eval()                              # grid (8, 12)
    x = torch.randn(4, 1, 198, 128)
    mixer = PatchMixer(beta=1.0, mode='time', grid=m.grid, generator=torch.Generator().manual_seed(0), lam=0.5)
    seen = {}

    def mix(tokens):                                                           # the mixer, its output kept
        seen['t'], info = mixer(tokens)
        return seen['t'], info
    with torch.no_grad():
        z, (info,) = m(x, mix=mix)
    assert z.shape == (4, 64) and info.lam == 0.5
    cols = info.mask.view(m.grid).all(0)                                       # time columns taken from the partner
    assert int(cols.sum()) == 6 and torch.equal(info.mask.view(m.grid), cols.expand(m.grid))
    with torch.no_grad():
        seq_mixed = m.from_grid(seen['t'], m.grid)
        seq, _ = m.embed_patches(x[:, 0])
    expect = torch.zeros(m.num_patches, dtype=torch.bool)
    for t in cols.nonzero().flatten().tolist(): expect[8 * t: 8 * t + 8] = True
    assert torch.equal(seq_mixed[:, expect], seq[info.index][:, expect])
    assert torch.equal(seq_mixed[:, ~expect], seq[:, ~expect])


def test_gradient_decay_and_explicit_attention_path():
    """The layer-wise gradient decay r scales the gradient reaching the encoder input by r^L and leaves the forward
    unchanged; the explicit attention path (need_weights) equals the fused one."""
    torch.manual_seed(0)
    tokens = torch.randn(2, 40, 64)
    grads, outs = [], []
    base = BEATs('beats-tiny', encoder_layers=3).state_dict()
    for r in (1.0, 0.5):
        m = BEATs('beats-tiny', layer_wise_gradient_decay_ratio=r, encoder_layers=3).train()
        m.load_state_dict(base)
        t = tokens.clone().requires_grad_(True)
        out = m.encoder(t)
        out.pow(2).sum().backward()
        grads.append(t.grad)
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[1], grads[0] * 0.5 ** 3)
    m.eval()
    with torch.no_grad():
        fused = m.encoder(tokens)
        explicit, attn = m.encoder(tokens, need_weights=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
    assert len(attn) == 3 and attn[0].shape == (2, 4, 40, 40)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(2, 4, 40))


# --------------------------------------------------------------------------------------------------------------------
# End to end: `patchmix train --model beats-tiny --method patchmix_cl` on synthetic data on the CPU (in process)
# --------------------------------------------------------------------------------------------------------------------
def test_cli_train_eval_beats_tiny_and_official_checkpoint(tmp_path, capsys):
    """From scratch (smoke preset: norm='dataset'), then eval of the run; then from a checkpoint in the official format
    with norm='audioset' (BEATs' own input, taken as it is), lr 1e-12: the run starts from the checkpoint's weights."""
    import json
    from patchmix_nb.cli import main
    from patchmix_nb.runs import load_checkpoint
    run = tmp_path / 'run'
    assert main(['train', '--preset', 'smoke', '--model', 'beats-tiny', '--method', 'patchmix_cl', '--out', str(run),
                 '--no-progress']) == 0
    m = json.loads((run / 'metrics.json').read_text())
    assert m['epochs_done'] == 1 and {'sp', 'se', 'score'} <= set(m['test'])
    capsys.readouterr()
    assert main(['eval', '--ckpt', str(run / 'best.pt'), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['score'] == pytest.approx(m['test']['score'], abs=1e-6)

    sd = official_checkpoint(tmp_path / 'beats_tiny.pt', TINY)
    pre = tmp_path / 'pre'
    assert main(['train', '--preset', 'smoke', '--model', 'beats', '--method', 'patchmix_cl', '--norm', 'audioset',
                 '--pretrained', str(tmp_path / 'beats_tiny.pt'), '--lr', '1e-12', '--max-steps', '1',
                 '--out', str(pre), '--no-progress']) == 0
    ck = load_checkpoint(pre / 'last.pt')
    assert tuple(ck['input_norm']) == (0.0, 1.0)                # the cache holds BEATs' own normalised fbank
    torch.testing.assert_close(ck['model']['encoder.layers.1.fc1.weight'], sd['encoder.layers.1.fc1.weight'],
                               rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------------------------------
# What a beats run trains on: the official preprocess of each cycle, in a cache of its own
# --------------------------------------------------------------------------------------------------------------------
def official_preprocess(waves: torch.Tensor) -> torch.Tensor:
    "BEATs' preprocess as the official code writes it: kaldi fbank of wave * 2^15 (16 kHz, 128 mel, 25/10 ms, povey)."
    import torchaudio.compliance.kaldi as ta_kaldi
    fb = torch.stack([ta_kaldi.fbank(w.unsqueeze(0) * 2 ** 15, num_mel_bins=128, sample_frequency=16000,
                                     frame_length=25, frame_shift=10) for w in waves])
    return (fb - 15.41663) / (2 * 6.55582)


def test_beats_run_reads_beats_own_fbank(tmp_path, capsys):
    """A beats-tiny run's training batch is the official preprocess of its cycles' waves, rounded to the cache's
    float16 (exactly: the same float32 computation, then one rounding); in a float32 cache, equal to float32 rounding.
    An AST run of the same data reads another cache, whose key and features are AST's as before."""
    from dataclasses import replace
    from patchmix_nb.audio import load_cycles
    from patchmix_nb.beats import BEATS_FEATURES
    from patchmix_nb.config import make_config
    from patchmix_nb.data import load_data, train_loader
    from patchmix_nb.features import build_cache, cache_key, cache_manifest, fbank
    from patchmix_nb.inference import _features
    cfg = make_config('smoke', model='beats-tiny', synthetic_recordings=24, cache=str(tmp_path / 'cache'))
    d = load_data(cfg)
    x, _, rows = next(iter(train_loader(d, 4, seed=1)))
    wav = d.index.recordings.set_index('stem').wav
    cyc = d.cache.cycles.iloc[rows.numpy()]
    clips = torch.cat([load_cycles(wav[c.stem], [c], duration=cfg.duration, pad=cfg.pad) for c in cyc.itertuples()])
    ref = official_preprocess(clips)                                       # (4, 198, 128) for 2 s clips
    assert x.shape == (4, 1, 198, 128) and d.cache.manifest['params']['features'] == 'beats'
    assert torch.equal(x[:, 0], ref.half().float())
    assert torch.equal(_features(cfg, clips), ref)                         # predict/eval on a recording: the same input
    c32 = build_cache(d.index, tmp_path / 'c32', workers=1, dtype='float32', duration=cfg.duration, pad=cfg.pad,
                      features=BEATS_FEATURES)
    torch.testing.assert_close(torch.from_numpy(c32.features[rows.numpy()]), ref, rtol=1.3e-6, atol=1e-5)

    ast = load_data(replace(cfg, model='ast-tiny'))
    assert ast.cache.path.parent == d.cache.path.parent and ast.cache.path != d.cache.path
    assert ast.cache.path.name == cache_key(cache_manifest(d.index, duration=cfg.duration, pad=cfg.pad))
    assert set(ast.cache.manifest['params']) == {'sample_rate', 'duration', 'pad', 'fade', 'resample', 'fbank', 'mean',
                                                 'std', 'dtype', 'shape'}
    xa = torch.from_numpy(ast.cache.features[rows.numpy()].astype('float32'))
    assert torch.equal(xa, fbank(clips).half().float()) and torch.equal(_features(replace(cfg, model='ast-tiny'), clips),
                                                                        fbank(clips))
    assert (xa - x[:, 0]).abs().mean() > 0.1                               # two inputs, not one in two scales
    from patchmix_nb.cli import main                                       # `patchmix prepare --model` builds the same
    assert main(['prepare', str(d.data_dir), '--cache', cfg.cache, '--model', 'beats-tiny', '--duration', '2',
                 '--workers', '1', '--no-progress']) == 0
    assert f"cache {d.cache.path}:" in capsys.readouterr().out
