import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny():
    from pvvae_cli import VideoVAE

    return VideoVAE.from_preset("tiny").eval()
