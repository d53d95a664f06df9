"""A non-editable install works: the wheel carries the configs, so `bench ls` lists judges
and eval sets and a run resolves its default config, judges and launch files."""
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def test_configs_are_package_data_in_a_source_checkout():
    from selbench.config import configs_root

    root = configs_root()
    assert (root / "default.yaml").is_file() and (root / "judges" / "gpt-5.1.yaml").is_file()
    assert root.resolve() == (REPO / "configs").resolve()


@pytest.mark.slow
def test_wheel_install_has_configs_and_runs(tmp_path, data_dir):
    wheels = tmp_path / "wheels"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO),
                          "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(wheels.glob("selbench-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "selbench/configs/default.yaml" in names
    assert "selbench/configs/judges/gpt-5.1.yaml" in names
    assert "selbench/configs/launch/accelerate-fsdp-8gpu.yaml" in names
    # a venv that sees the dependencies installed where this test runs (a venv or the system:
    # `--system-site-packages` would see the *base* interpreter's, not this venv's) and gets
    # selbench from the wheel only: the current site dirs are added by a .pth path list, which
    # does not process their own .pth files, so an editable selbench there stays invisible
    import site
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    outer = [d for d in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
             if Path(d).is_dir()]
    (Path(purelib) / "_outer_deps.pth").write_text("\n".join(outer) + "\n")
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the wheel's selbench only
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   timeout=600)
    where = subprocess.run([str(py), "-c", "import selbench, sys; print(selbench.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True, env=env).stdout
    assert str(venv) in where and str(REPO) not in where
    bench = [str(py), "-m", "selbench.cli"]
    ls = subprocess.run(bench + ["ls"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                        env=env)
    assert ls.returncode == 0, ls.stderr[-2000:]
    assert "gpt-5.1" in ls.stdout and "offline-refsim-minilm" in ls.stdout and "wizardlm" in ls.stdout
    plan = subprocess.run(bench + ["plan", "--data-dir", str(data_dir), "--runs-dir",
                                   str(tmp_path / "runs")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=env)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    assert "pool 'alpaca'" not in plan.stderr and "train full: 200 examples" in plan.stdout


def test_installed_versions_match_the_constraints_file():
    """CI installs with `-c constraints/cpu.txt` (the README's setup command): what results
    depend on is pinned, and the manifest of every run records what was installed."""
    from importlib.metadata import PackageNotFoundError, version

    pins = {}
    for line in (REPO / "constraints" / "cpu.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, ver = line.split("==")
            pins[name.strip()] = ver.strip()
    for core in ("torch", "transformers", "trl", "peft", "datasets", "numpy", "openai"):
        assert core in {k.lower() for k in pins}, core
    for name, ver in pins.items():
        try:
            got = version(name)
        except PackageNotFoundError:
            continue  # an optional extra that this environment did not install
        assert got.split("+")[0] == ver, (name, got, ver)
