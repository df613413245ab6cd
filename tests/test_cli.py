import subprocess
import sys

from bertdims.cli import main


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
