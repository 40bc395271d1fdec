"""Frame planning (pad/crop/resize, 1+4k) and the streaming ``Codec`` against one-pass model calls."""

import numpy as np
import pytest
import torch
from conftest import requires_cpu_bf16

from pvvae_cli.codec.framing import FramePlan, pad_frames, parse_size, plan_frames
from pvvae_cli.codec.pipeline import Codec, EncodeOptions, NonFiniteError, model_chunks
from pvvae_cli.media.video_io import frames_to_tensor, read_clip
from pvvae_cli.media.writer import write_video

CPU = torch.device("cpu")


@pytest.mark.parametrize("t,pad", [(1, 0), (2, 3), (5, 0), (16, 1), (18, 3)])
def test_frame_count_padding(t, pad):
    plan = plan_frames(t, 70, 100)
    assert plan.frame_pad == pad and (plan.encoded_frames - 1) % 4 == 0 and plan.num_frames == t


def test_spatial_plans_invert_to_the_original_size():
    x = torch.rand(3, 2, 70, 100) * 2 - 1
    pad = plan_frames(2, 70, 100)
    assert (pad.encoded_height, pad.encoded_width, pad.pad) == (80, 112, (0, 10, 0, 12))
    y = pad.apply(x)
    assert torch.equal(y[..., :70, :100], x) and torch.equal(y[..., 79, :100], x[..., 69, :])  # edge replicated
    assert torch.equal(pad.invert(y), x)  # exact
    rs = plan_frames(2, 70, 100, fit="resize")
    assert (rs.encoded_height, rs.encoded_width) == (64, 96) and rs.invert(rs.apply(x)).shape == x.shape
    crop = plan_frames(2, 70, 100, fit="crop")
    assert (crop.encoded_height, crop.encoded_width, crop.crop) == (64, 96, (3, 2, 64, 96))
    assert torch.equal(crop.apply(x), x[..., 3:67, 2:98]) and crop.output_size() == (64, 96)
    small = plan_frames(1, 720, 1280, max_size=256)
    assert small.resize == (144, 256) and (small.encoded_height, small.encoded_width) == (144, 256)
    assert small.output_size() == (720, 1280) and small.output_size(source_size=False) == (144, 256)
    assert plan_frames(1, 100, 100, max_size=256).resize is None  # never enlarged
    sized = plan_frames(1, 70, 100, size=(40, 50))
    assert (sized.encoded_height, sized.encoded_width) == (48, 64) and sized.output_size() == (70, 100)
    with pytest.raises(ValueError, match="smaller than 16"):
        plan_frames(1, 10, 100, fit="crop")


def test_parse_size():
    assert parse_size("480x640") == (480, 640) and parse_size("256") == (256, 256)
    for bad in ("0x5", "axb", "1x2x3", ""):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
            parse_size(bad)


def test_model_chunks_regroup_and_pad():
    plan = plan_frames(11, 16, 16)  # 11 frames -> 13 = 1 + 4*3, the last frame repeated twice
    x = torch.arange(11.0).view(1, 1, 11, 1, 1).expand(1, 3, 11, 16, 16)
    for sizes in ([11], [3, 3, 3, 2], [1] * 11):
        parts = torch.split(x, sizes, dim=2)
        chunks = list(model_chunks(parts, plan, 4))
        assert [c.shape[2] for c in chunks] == [1, 4, 4, 4]
        assert torch.cat(chunks, 2)[0, 0, :, 0, 0].tolist() == list(range(11)) + [10, 10]
    assert [c.shape[2] for c in model_chunks([x], plan, 8)] == [1, 8, 4]


def _prepared(path, plan):
    frames, _ = read_clip(path)
    return pad_frames(plan.apply(frames_to_tensor(frames)), plan.frame_pad)[None]  # (1, 3, T, H, W)


@pytest.mark.parametrize("chunk", [1, 2])
def test_streamed_file_encode_decode_equals_one_pass(tiny, tmp_path, chunk):
    frames = np.random.default_rng(0).integers(0, 256, (10, 34, 50, 3), dtype=np.uint8)
    write_video(tmp_path / "c.mp4", frames, fps=12)
    codec = Codec(tiny, "preset:tiny", CPU, torch.float32)
    opts = EncodeOptions(chunk_latents=chunk, save_moments=True)
    enc = codec.encode_file(tmp_path / "c.mp4", opts)
    plan = codec.plan_source(tmp_path / "c.mp4", opts).plan
    x = _prepared(tmp_path / "c.mp4", plan)
    assert x.shape == (1, 3, 13, 48, 64)
    with torch.no_grad():
        post = tiny.encode(x)
        y = tiny.decode(post.mode())
    assert enc.latent.shape == (8, 4, 3, 4)
    assert (enc.latent - post.mode()[0]).abs().max() <= 1e-4
    assert (enc.logvar - post.logvar[0]).abs().max() <= 1e-4
    m = enc.meta
    assert (m.num_frames, m.frame_pad, m.height, m.width, m.fps, m.pad) == (10, 3, 34, 50, 12.0, (0, 14, 0, 14))
    out = np.concatenate(list(codec.decode_frames(enc.latent, m, chunk_latents=chunk)))
    assert out.shape == (10, 34, 50, 3)  # exactly the original frame count and size
    want = ((y[0, :, :10, :34, :50].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).to(torch.uint8).numpy()
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_streaming_is_causal_across_chunks(tiny):
    codec = Codec(tiny, "t", CPU, torch.float32)
    plan = plan_frames(13, 32, 32)
    a = torch.rand(1, 3, 13, 32, 32) * 2 - 1
    b = a.clone()
    b[:, :, 5:] = torch.rand_like(b[:, :, 5:])  # change everything after the second chunk (frames 1..4)
    za, _ = codec.encode_stream(torch.split(a, 3, dim=2), plan, EncodeOptions())
    zb, _ = codec.encode_stream(torch.split(b, 3, dim=2), plan, EncodeOptions())
    assert torch.equal(za[:, :, :2], zb[:, :, :2]) and not torch.equal(za[:, :, 2:], zb[:, :, 2:])


def test_batch_equals_single(tiny):
    codec = Codec(tiny, "t", CPU, torch.float32)
    plan = plan_frames(5, 32, 48)
    x = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    both, _ = codec.encode_stream([x], plan, EncodeOptions())
    for i in range(2):
        one, _ = codec.encode_stream([x[i : i + 1]], plan, EncodeOptions())
        assert (both[i] - one[0]).abs().max() <= 1e-5


def test_non_finite_output_fails_loudly(tiny):
    codec = Codec(tiny, "t", CPU, torch.float16)
    with torch.no_grad():
        tiny.encoder.conv_in.weight.mul_(1e6)  # activations beyond fp16's 65504 (the posterior's layers run in fp32)
    plan = plan_frames(1, 32, 32)
    x = torch.rand(1, 3, 1, 32, 32)
    with pytest.raises(NonFiniteError, match="fp16 overflows.*bf16 or fp32"):
        codec.encode_stream([x], plan, EncodeOptions())
    mean, _ = Codec(tiny, "t", CPU, torch.float32).encode_stream([x], plan, EncodeOptions())
    assert torch.isfinite(mean).all()  # fine in fp32, overflows fp16


def test_decode_refuses_other_model(tiny, tmp_path):
    from pvvae_cli import VideoVAE

    frames = np.zeros((1, 32, 32, 3), np.uint8)
    write_video(tmp_path / "a.png", frames, fps=0)
    enc = Codec(tiny, "preset:tiny", CPU, torch.float32).encode_file(tmp_path / "a.png", EncodeOptions())
    other = Codec(VideoVAE.from_preset("tiny", base_channels=4).eval(), "other", CPU, torch.float32)
    with pytest.raises(ValueError, match="config hash.*--force"):
        other.check_latent(enc.latent, enc.meta)
    assert "--force" in other.check_latent(enc.latent, enc.meta, force=True)[0]
    wide = Codec(VideoVAE.from_preset("small").eval(), "small", CPU, torch.float32)
    with pytest.raises(ValueError, match="8 channels, model small expects 32"):
        wide.check_latent(enc.latent, enc.meta, force=True)
    plan = FramePlan(1, 32, 32, 1, 32, 32)
    assert plan.invert(torch.zeros(3, 1, 32, 32)).shape == (3, 1, 32, 32)


@requires_cpu_bf16
def test_bf16_inference_path_matches_autocast_reference(tiny):
    """The direct oneDNN path (bf16, channels-last, used under inference_mode) agrees with plain autocast
    F.conv3d (the autograd path), and chunked bf16 equals one-pass bf16."""
    x = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.enable_grad():
            ref = tiny.encoder(x.requires_grad_()).float().detach()  # autograd path: F.conv3d under autocast
        with torch.inference_mode():
            fast = tiny.encoder(x.detach()).float()
            chunked = tiny.encode_chunked(x.detach()).mean.float()
    assert (fast - ref).abs().max() <= 0.02 * ref.abs().max()
    assert (chunked - fast[:, :8]).abs().max() <= 0.005 * fast.abs().max()
