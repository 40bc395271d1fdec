import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def scramble(model: torch.nn.Module) -> torch.nn.Module:
    """Give every weight a random non-zero value, as a trained model has.

    The model's own init starts past temporal taps and residual branches at zero (``initialize_weights``), which
    would let invariance tests (causality, chunked == one pass, tiling) pass without exercising those paths."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
                m.reset_parameters()  # PyTorch's default init: every tap random
        if hasattr(model, "INITIAL_LOGVAR"):  # the posterior's log-variance bias as the model sets it
            model.encoder.conv_out.bias[model.config.latent_channels :].fill_(model.INITIAL_LOGVAR)
        if getattr(model, "padding_token", None) is not None:
            model.padding_token.normal_()
    return model


@pytest.fixture
def tiny():
    from pvvae_cli import VideoVAE

    return scramble(VideoVAE.from_preset("tiny")).eval()


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-waits, which make a shared 2-core machine many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
