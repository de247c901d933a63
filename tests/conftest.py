from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"

# One thread per test process: several tests start subprocesses (torchrun, CLI runs), and
# OpenMP threads spinning against each other on 2 cores made steps 30x slower.
torch.set_num_threads(1)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
