import subprocess
import sys

from panoptic_detr.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "panoptic-detr" in out


def test_unknown_command_is_an_error():
    r = subprocess.run([sys.executable, "-m", "panoptic_detr", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
