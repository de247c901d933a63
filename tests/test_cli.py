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


def test_warnings_are_warning_lines_once_with_counts(capsys):
    """Python printed `.../evaluate.py:203: UserWarning: ...` and the source line; the CLI
    prints `warning: <message>` once per message, and how often repeated ones occurred."""
    import io
    import warnings

    from panoptic_detr.cli import warnings_as_lines

    stream = io.StringIO()
    with warnings_as_lines(stream):
        for _ in range(3):
            warnings.warn("3 segment(s) scored as VOID")
        warnings.warn("another\nmessage")
    assert stream.getvalue().splitlines() == [
        "warning: 3 segment(s) scored as VOID",
        "warning: another message",
        "warning: (3 times in all) 3 segment(s) scored as VOID",
    ]
    with warnings.catch_warnings(record=True) as record:  # the hook is gone afterwards
        warnings.simplefilter("always")
        warnings.warn("x")
    assert len(record) == 1


def test_a_library_warning_through_the_cli(tmp_path, monkeypatch):
    """The same through `python -m panoptic_detr`: no `UserWarning`, no file:line."""
    script = tmp_path / "warn_cmd.py"
    script.write_text(
        "import warnings\nHELP = 'x'\ndef configure(p):\n    pass\n"
        "def run(args):\n    warnings.warn('torch said something')\n    return 0\n"
    )
    code = ("import sys, importlib; sys.path.insert(0, %r); import panoptic_detr.cli as c; "
            "c.COMMANDS['warn-test'] = 'warn_test'; "
            "c._load = lambda m: importlib.import_module('warn_cmd'); sys.exit(c.main(['warn-test']))") % str(tmp_path)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "warning: torch said something\n"
