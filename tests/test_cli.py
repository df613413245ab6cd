import subprocess
import sys

from pathlib import Path

from bertdims.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from cli_checks import assert_one_line_refusal  # noqa: E402


def test_tasks_lists_the_five_embedded_tasks_with_sizes(capsys):
    assert main(["tasks", "--source", "embedded"]) == 0
    out = capsys.readouterr().out
    for name, train in [("rotten_tomatoes", "10234"), ("bbc_news", "1701"), ("20newsgroups", "10146"),
                        ("reuters_r8", "4881"), ("stsb", "5749")]:
        line = next(l for l in out.splitlines() if l.strip().startswith(name))
        assert "embedded" in line and train in line.replace(",", ""), line


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "bertdims.cli", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("bertdims ")


import pytest

from bertdims.device import pick_device
from bertdims._validate import ConfigError


def test_pick_device_raises_config_error():
    with pytest.raises(ConfigError, match="'device' = 'gpu'"):
        pick_device("gpu")
    with pytest.raises(ConfigError, match="'device' = 'cuda:x'|no CUDA"):
        pick_device("cuda:x")
    with pytest.raises(ConfigError, match="'device' = 3"):
        pick_device(3)


@pytest.mark.parametrize("argv,needle", [
    (["finetune", "--device", "gpu"], "'device' = 'gpu'"),
    (["finetune", "--task", "no_such_task"], "'task' = 'no_such_task'"),
    (["finetune", "--lr", "-1"], "'lr' = -1"),
    (["finetune", "--lr", "abc"], "--lr: invalid float value"),
    (["finetune", "--model", "no-such-org/no-such-model", "--max-train-samples", "4"], "no-such-org/no-such-model"),
    (["extract", "embedded", "no_such_task"], "'task' = 'no_such_task'"),
    (["extract", "embedded", "stsb", "--token", "bogus"], "'token' = 'bogus'"),
    (["run", "01", "-p", "split", "dev"], "'split' = 'dev'"),
    (["run", "no_such_chapter"], "'chapter' = 'no_such_chapter'"),
    (["run", "01", "--preset", "huge"], "'preset' = 'huge'"),
    (["prepare", "--preset", "huge", "--out", "/tmp/unused"], "'preset' = 'huge'"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_input_is_one_line_and_status_2(argv, needle, capsys, monkeypatch):
    from pathlib import Path
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert_one_line_refusal(argv, needle, capsys)


def test_real_process_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "bertdims.cli", "finetune", "--device", "tpu"],
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                               "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
