"""A full disk while sam2click-evaluate writes its results says how to go on: the results are
incomplete and the re-run needs --overwrite (a folder holding results is refused without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_run_safety import copy_run, finished, full_disk  # noqa: F401  (fixtures)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_a_full_disk_while_writing_results_says_to_rerun_with_overwrite(finished, tmp_path,  # noqa: F811
                                                                        full_disk,  # noqa: F811
                                                                        monkeypatch):
    from scripts import evaluate

    # The command's process-wide allocator choice would outlive this test in the test process.
    monkeypatch.setattr(evaluate, "keep_freed_memory", lambda: False)

    run = copy_run(finished, tmp_path)
    argv = ["--checkpoint", str(run / "last.pt"), "--num-clicks", "3", "--device", "cpu",
            "--no-baselines", "--out", str(tmp_path / "ev")]
    full_disk("results.json")
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(argv)
    msg = str(stopped.value.code)
    assert "no space left" in msg and "results.json" in msg
    assert "results in" in msg and "are incomplete" in msg and "re-run the same command with --overwrite" in msg
    full_disk("never")  # space freed
    if any((tmp_path / "ev").glob("results.*")):  # what the message warned of
        with pytest.raises(SystemExit, match="already holds evaluation results"):
            evaluate.main(argv)
    assert evaluate.main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "ev" / "results.json").is_file()
