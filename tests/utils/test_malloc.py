import subprocess
import sys


def test_tune_malloc_applies_once_and_can_be_disabled():
    code = "from panoptic_detr.utils.malloc import tune_malloc; print(tune_malloc(), tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]  # glibc on the machines we support
    env = {"PANOPTIC_DETR_NO_MALLOC_TUNING": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out == ["False", "False"]
