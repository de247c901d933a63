import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
