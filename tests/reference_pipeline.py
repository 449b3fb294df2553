"""The reference implementation's audio pipeline, written plainly with torchaudio, as the referee of our tests."""
import math
import os
from pathlib import Path

import soundfile as sf
import torch
import torchaudio

KALDI = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128,
             dither=0.0, frame_shift=10)


def icbhi_dir() -> Path:
    "The real ICBHI material (../shared/icbhi), or $PATCHMIX_ICBHI."
    return Path(os.environ.get('PATCHMIX_ICBHI', Path(__file__).resolve().parents[2] / 'shared' / 'icbhi'))


def reference_clips(wav: Path, cycles) -> torch.Tensor:
    "The reference pipeline written plainly: Resample + Fade on the recording, slice, tile + Fade per cycle."
    data, sr = sf.read(str(wav), dtype='float32', always_2d=True)
    data = torch.from_numpy(data.T.copy())
    if sr != 16000:
        data = torchaudio.transforms.Resample(sr, 16000)(data)
    data = torchaudio.transforms.Fade(fade_in_len=1000, fade_out_len=1000, fade_shape='linear')(data)
    out = []
    for c in cycles:
        L = data.shape[1]
        chunk = data[:, min(int(c.start * 16000), L):min(int(c.end * 16000), L)]
        if chunk.shape[-1] > 128000:
            chunk = chunk[..., :128000]
        else:
            chunk = chunk.repeat(1, math.ceil(128000 / chunk.shape[-1]))[..., :128000]
            chunk = torchaudio.transforms.Fade(fade_in_len=0, fade_out_len=1000, fade_shape='linear')(chunk)
        out.append(chunk[0])
    return torch.stack(out)


def reference_fbank(wav: Path, cycles) -> torch.Tensor:
    "reference_clips, then kaldi.fbank per cycle and the AudioSet normalisation: (n, 798, 128)."
    out = [torchaudio.compliance.kaldi.fbank(c[None], **KALDI) for c in reference_clips(wav, cycles)]
    return (torch.stack(out) - (-4.2677393)) / (4.5689974 * 2)
