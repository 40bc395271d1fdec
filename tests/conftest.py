import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny():
    from pvvae_cli import VideoVAE

    return VideoVAE.from_preset("tiny").eval()


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-waits, which make a shared 2-core machine many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
