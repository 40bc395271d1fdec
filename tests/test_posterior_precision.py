"""The posterior is produced in fp32 under bf16 autocast (audit P4): the last projection(s) to the moments (and
PV-VAE's shortcut add) run with autocast off, so stored latents carry no bf16 rounding (an ulp of 0.25 at
``|z| >= 32``)."""

import pytest
import torch
from conftest import requires_cpu_bf16, scramble

from pvvae_cli.models.ivvae.model import IVVAE
from pvvae_cli.models.pvvae.model import VideoVAE
from pvvae_cli.models.wan.model import WanVAE

pytestmark = requires_cpu_bf16


def _pvvae():
    return VideoVAE.from_preset("tiny", linear_shortcut=True), "encoder.conv_out"


def _pvvae_plain():
    return VideoVAE.from_preset("tiny"), "encoder.conv_out"


def _wan():  # the encoder's conv_out, then quant_conv
    return WanVAE.from_preset("wan2.1", base_channels=8, channel_multipliers=(1, 2, 2, 2)), "encoder.conv_out"


def _ivvae():
    return IVVAE.from_preset("ivvae-tiny"), "encoder.quant_conv"


@pytest.mark.parametrize("build", [_pvvae, _pvvae_plain, _wan, _ivvae], ids=["pvvae", "pvvae-plain", "wan", "ivvae"])
def test_posterior_mean_is_fp32_under_bf16_autocast(build, one_thread):
    model, first_fp32 = build()
    model = scramble(model).eval()
    with torch.no_grad():  # a larger mean, as in trained models (the shipped one's channel 0 has std 20)
        for p in model.parameters():
            p.mul_(1.5)
    layer = model.get_submodule(first_fp32)
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1

    features = []
    hook = layer.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        post = model.encode(x)
    hook.remove()
    (f,) = features
    assert f.dtype == torch.float32  # the bf16 features, cast for the fp32 layers
    assert post.mean.dtype == torch.float32 and post.logvar.dtype == torch.float32

    # The reference: the same features through only the final layers, in fp32 without autocast.
    hook = layer.register_forward_pre_hook(lambda m, args: (f, *args[1:]))
    with torch.inference_mode():
        ref = model.encode(x)
    hook.remove()
    scale = ref.mean.abs().max()
    assert (post.mean - ref.mean).abs().max() <= 1e-6 * scale
    assert (post.logvar - ref.logvar).abs().max() <= 1e-6 * ref.logvar.abs().max()
    rounding = (ref.mean.bfloat16().float() - ref.mean).abs().max()  # what a bf16 mean would have carried
    assert rounding > 100 * (post.mean - ref.mean).abs().max()


def test_streamed_posterior_is_fp32_too(one_thread):
    """The pipeline's path (``encode_chunk`` with a stream state, chunk by chunk) gives an fp32 mean."""
    model = scramble(VideoVAE.from_preset("tiny", linear_shortcut=True)).eval()
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        post = model.encode_chunked(x)
        one_pass = model.encode(x)
    assert post.mean.dtype == torch.float32
    torch.testing.assert_close(post.mean, one_pass.mean, rtol=0.05, atol=0.05)  # bf16 features: close, not equal


def test_fp32_runs_are_unchanged(one_thread):
    """Without autocast nothing changes: the fp32 layers see the dtype they always did."""
    model = scramble(VideoVAE.from_preset("tiny", linear_shortcut=True)).eval()
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    enc = model.encoder
    features = []
    hook = enc.conv_out.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    with torch.inference_mode():
        post = model.encode(x)
        hook.remove()
        mean = enc.conv_out(features[0])[:, :8] + enc.shortcut(x)  # the pre-P4 computation, in fp32
    assert features[0].dtype == torch.float32
    torch.testing.assert_close(post.mean, mean, rtol=0, atol=0)
