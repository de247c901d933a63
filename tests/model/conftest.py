import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _small_input_convolutions():
    """On small test images oneDNN spends more time building kernels for each new shape than
    computing; the native convolutions give the same results faster. Restored afterwards
    (the parity tests switch it back on, so the default path is covered too)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = previous
