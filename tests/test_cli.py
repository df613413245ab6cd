import subprocess
import sys

from pathlib import Path

from bertdims.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from change_detectors import SPLIT_SIZES_CHANGE_DETECTOR  # noqa: E402
from cli_checks import assert_one_line_refusal  # noqa: E402


def test_tasks_lists_the_five_embedded_tasks_with_sizes(capsys):
    assert main(["tasks", "--source", "embedded"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-3:] == ["train", "validation", "test"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == list(SPLIT_SIZES_CHANGE_DETECTOR)        # the five, in registry order
    for name, sizes in SPLIT_SIZES_CHANGE_DETECTOR.items():       # golden counts: a change detector
        assert rows[name][1] == "embedded" and tuple(map(int, rows[name][-3:])) == sizes, rows[name]


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "bertdims.cli", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("bertdims ")


import pytest

from bertdims.core.device import pick_device
from bertdims.core._validate import ConfigError


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
