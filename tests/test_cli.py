from selbench.cli import main


def test_bench_ls_lists_everything_registered(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("gsnr", "gsnr-drop", "ifd", "ifd-diverse", "grads", "spice", "spice-diag", "random",
                 "offline-refsim-minilm", "gpt-5.1", "wizardlm", "vicuna", "smollm2-135m-instruct"):
        assert name in out


def test_unknown_selector_and_bad_ratio_are_clear_errors(capsys):
    assert main(["run", "--selector", "gsrn"]) == 2
    assert "did you mean 'gsnr'" in capsys.readouterr().err
    assert main(["run", "--selector", "random", "--ratio", "1.5"]) == 2
    assert "outside (0, 1]" in capsys.readouterr().err
    assert main(["run", "--set", "train.nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


def test_leaderboard_on_empty_runs_dir(tmp_path, capsys):
    assert main(["leaderboard", "--runs-dir", str(tmp_path)]) == 0
    assert "no finished runs" in capsys.readouterr().out
