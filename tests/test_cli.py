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


def test_bench_alone_prints_help_and_version(capsys):
    import pytest

    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("selbench ")


def test_print_config_shows_every_layer_resolved(capsys):
    import yaml

    assert main(["run", "--print-config", "--ratio", "0.1,0.2", "--set", "train.learning_rate=1e-4"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["ratios"] == [0.1, 0.2] and cfg["train"]["learning_rate"] == 1e-4
    assert cfg["experiment"] == "smoke" and cfg["data"]["pool_size"] == 200  # default.yaml
