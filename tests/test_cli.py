import shutil
import subprocess
import sys

from typer.testing import CliRunner

from pvvae_cli import __version__
from pvvae_cli.cli.app import app

runner = CliRunner()


def _pvvae():
    exe = shutil.which("pvvae")
    assert exe, "the console command `pvvae` is not installed (pip install -e .)"
    return exe


def test_console_version():
    out = subprocess.run([_pvvae(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pvvae {__version__}"


def test_console_help_lists_commands():
    out = subprocess.run([_pvvae(), "--help"], capture_output=True, text=True, check=True)
    assert "info" in out.stdout


def test_python_m():
    out = subprocess.run([sys.executable, "-m", "pvvae_cli", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_info_presets():
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0
    assert "tiny" in res.output and "t4s16c64" in res.output


def test_info_bad_model(tmp_path):
    res = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert "no such weights folder" in res.output


def test_cli_starts_without_torch():
    """--help and --version import no torch: the package exports load lazily and commands import it when run."""
    code = "import sys, pvvae_cli, pvvae_cli.cli.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_preset_model():
    res = runner.invoke(app, ["info", "preset:tiny"])
    assert res.exit_code == 0
    assert "latent: t4s16c8" in res.output and "RANDOM weights" in res.output
    res = runner.invoke(app, ["info", "preset:nope"])
    assert res.exit_code == 2 and "unknown preset 'nope'" in res.output


def test_main_turns_any_pvvae_error_into_one_line(monkeypatch, capsys):
    """A ``PvvaeError`` raised deep in the library (not caught by a command) is one line and exit code 2."""
    import pytest

    from pvvae_cli.cli import app as app_module
    from pvvae_cli.errors import PvvaeError

    def boom():
        raise PvvaeError("clip.mp4: unreadable; re-encode it")

    monkeypatch.setattr(app_module, "app", boom)
    with pytest.raises(SystemExit) as exc:
        app_module.main()
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == "error: clip.mp4: unreadable; re-encode it"


def test_help_shows_flags_without_a_type_and_keeps_brackets():
    for command in ("encode", "decode", "predict", "eval", "train"):
        out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}, terminal_width=200).output
        assert "<bool>" not in out, command
    out = runner.invoke(app, ["encode", "--help"], env={"COLUMNS": "200"}, terminal_width=200).output
    assert "Store normalised latents [default: if the model has stats]." in out
    assert "--overwrite " in out


def test_stdout_carries_results_only_and_logs_get_no_progress_escapes(tmp_path):
    """Native libraries' lines (decord, ffmpeg: written to file descriptor 1) go to stderr; with stderr not a
    terminal there are no progress bars (no cursor escapes in logs)."""
    import numpy as np

    from pvvae_cli.media.writer import write_video

    code = ("import os, sys; from pvvae_cli.runtime.progress import keep_stdout_for_results; "
            "keep_stdout_for_results(); os.write(1, b'native log line\\n'); print('result')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "result\n" and "native log line" in out.stderr
    for i in range(2):
        write_video(tmp_path / "clips" / f"v{i}.mp4", np.zeros((5, 32, 32, 3), np.uint8), fps=8)
    out = subprocess.run([_pvvae(), "encode", str(tmp_path / "clips"), "-o", str(tmp_path / "lat"), "--model",
                          "preset:tiny"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == ""
    assert "\r" not in out.stderr and "\x1b[" not in out.stderr and "encoded 2, skipped 0, failed 0" in out.stderr


def test_info_accepts_a_run_folder_as_train_init_does(tmp_path):
    from pvvae_cli import VideoVAE
    from pvvae_cli.engine.checkpoints import CONFIG_FILE, WEIGHTS_DIR

    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text("{}")
    res = runner.invoke(app, ["info", str(run)])
    assert res.exit_code == 2 and "run folder without exported weights" in res.output
    VideoVAE.from_preset("tiny").save_pretrained(run / WEIGHTS_DIR)
    res = runner.invoke(app, ["info", str(run)])
    assert res.exit_code == 0 and "latent: t4s16c8" in res.output and "parameters:" in res.output


def test_resume_error_names_only_flags_that_exist(tmp_path):
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--lr", "0.1"])
    assert res.exit_code == 2 and "drop --lr" in res.output and "--steps" in res.output
    assert "--keep-checkpoints" not in res.output
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    for flag in res.output.split("(only ")[1].split(" may change")[0].split(", "):
        assert flag in help_text, flag
