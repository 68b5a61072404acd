"""The command line: help, registries, one-line errors with exit codes; the package layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aigi.pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmd", [[], ["demo"], ["run"], ["status"], ["generators"], ["features"]])
def test_help(cmd: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: aigi" in capsys.readouterr().out


def test_registries_listed(capsys: pytest.CaptureFixture) -> None:
    assert main(["generators"]) == 0
    assert "stable_diffusion" in capsys.readouterr().out
    assert main(["features"]) == 0
    out = capsys.readouterr().out
    assert "lare" in out and "t = 200" in out and "ensemble = 4" in out


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nout = "x"\nseeed = 1\n')
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run.seeed" in err and str(cfg) in err


def test_status_of_non_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", str(tmp_path)]) == 1
    assert "not an aigi run directory" in capsys.readouterr().err


def test_console_script_and_namespaced_layout(tmp_path: Path) -> None:
    """From outside the repository: the subpackages import as aigi.*, and no bare names leak."""
    code = (
        "import importlib.util, aigi.pipeline, aigi.prompts, aigi.generators, aigi.manifests, "
        "aigi.curation, aigi.features, aigi.detectors\n"
        "bare = [n for n in ('pipeline','prompts','generators','manifests','curation','features','detectors') "
        "if importlib.util.find_spec(n) is not None]\n"
        "assert not bare, bare\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    out = subprocess.run(["aigi", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_a_reader_that_leaves_early_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigi features | head -1`: the pipe closes under the writer; aigi exits 0, quietly."""
    import os

    r, w = os.pipe()
    os.close(r)  # the reader is gone: every write raises BrokenPipeError
    out = os.fdopen(w, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", out)
    try:
        assert main(["features"]) == 0
    finally:
        out.close()
