"""`bench leaderboard --publish DIR`: a self-contained folder (synthetic runs, no model), and
it never loses a user's file (issue 22)."""
import json
import re

import pytest
from test_figures import make_study  # noqa: E402  (tests/ is on sys.path under pytest)

from selbench import cli


def test_publish_writes_readme_csv_data_and_figures_with_relative_links(tmp_path, tiny_pool_rows):
    runs = make_study(tmp_path, tiny_pool_rows)
    out = tmp_path / "study"
    rc = cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out), "--title", "T",
                   "--note", "A smoke-scale study: read the MDE first."])
    assert rc == 0
    md = (out / "README.md").read_text()
    assert md.startswith("# T\n") and "A smoke-scale study: read the MDE first." in md.split("## ")[0]
    order = ["## Summary", "## Commands", "## Controls", "minimum detectable", "## Table 1",
             "## Table 2", "## Table 1 on wizardlm only", "## Seeds", "## Paired comparisons",
             "## Answer length", "## Judges: agreement", "## Reference-answer NLL",
             "## Cost next to quality", "## Figures", "## Method notes", "## Config fingerprints",
             "## Package versions"]
    pos = [md.lower().index(s.lower()) for s in order]
    assert pos == sorted(pos)  # the summary and the controls come before any selector table
    assert "bench grid g.yaml" in md and "vicuna-pairwise-v1" in md and "PWS = 1 + (W - L)" in md
    # Table 1 layout: the 100% column, 1.00 for each row, paper names with the ids in a note
    t1 = md.split("## Table 1: ")[1].split("## ")[0]
    header = [l for l in t1.splitlines() if l.startswith("| selector")][0]
    assert "tinypool / m / 5%" in header and "tinypool / m / 100%" in header
    assert "Random = `random`" in t1 and "G-SNR = `gsnr`" in t1
    # Table 2: ablation as a signed delta vs the selector it ablates
    t2 = md.split("## Table 2")[1].split("## ")[0]
    assert re.search(r"\| gsnr-drop: #1 G_s - G_t\s+\| [+-]\d\.\d{3}", t2)
    # the no-power banner: this synthetic study has no positive control
    assert "No positive control ran" in md.split("## Controls")[1].split("## ")[0]
    # shared work (the gradient profile) is listed once and charged once
    cost = md.split("## Cost next to quality")[1].split("## ")[0]
    assert cost.count("gradient profile |") == 1 and "shared work" in cost.lower()
    # links: relative only, every one resolves inside the folder
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all(not l.startswith(("/", "http")) for l in links)
    assert all((out / l).exists() for l in links)
    assert str(tmp_path) not in md
    assert (out / "leaderboard.csv").read_text().startswith("selector,")
    assert len(list((out / "figures").glob("*.png"))) == 6
    assert (out / "data" / "prompts.csv").exists() and (out / ".selbench-study.json").exists()


def test_publish_refuses_a_folder_it_did_not_write(tmp_path, tiny_pool_rows):
    runs = make_study(tmp_path, tiny_pool_rows)
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    (out / "README.md").write_text("my notes")
    (out / "figures" / "my_plot.png").write_bytes(b"png")
    rc = cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out)])
    assert rc == 2
    assert (out / "README.md").read_text() == "my notes"
    assert (out / "figures" / "my_plot.png").read_bytes() == b"png"
    assert sorted(p.name for p in out.rglob("*")) == ["README.md", "figures", "my_plot.png"]


def test_republish_replaces_its_own_files_and_keeps_the_users(tmp_path, tiny_pool_rows):
    runs = make_study(tmp_path, tiny_pool_rows)
    out = tmp_path / "study"
    assert cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out), "--title", "A"]) == 0
    (out / "figures" / "my_plot.png").write_bytes(b"mine")
    (out / "NOTES.md").write_text("keep me")
    marker = json.loads((out / ".selbench-study.json").read_text())
    assert "README.md" in marker["files"] and "NOTES.md" not in marker["files"]
    assert cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out), "--title", "B"]) == 0
    assert (out / "README.md").read_text().startswith("# B")
    assert (out / "figures" / "my_plot.png").read_bytes() == b"mine"
    assert (out / "NOTES.md").read_text() == "keep me"
    assert not list(tmp_path.glob(".study.*"))  # no temp folder left behind
    # a file the publisher wrote and the user edited since is never overwritten
    (out / "README.md").write_text("# B\nmy edits")
    assert cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out)]) == 2
    assert (out / "README.md").read_text() == "# B\nmy edits"


def test_a_failed_publish_leaves_the_earlier_output_untouched(tmp_path, tiny_pool_rows, monkeypatch):
    runs = make_study(tmp_path, tiny_pool_rows)
    out = tmp_path / "study"
    assert cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise RuntimeError("figure failed")

    monkeypatch.setattr("selbench.leaderboard.publish.make_figures", boom)
    assert cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out)]) == 2
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".study.")]


@pytest.mark.parametrize("argv", [["leaderboard", "--runs-dir", "NOPE"],
                                  ["judge", "--reparse", "--runs-dir", "NOPE"]])
def test_a_mistyped_runs_dir_is_refused_and_not_created(tmp_path, capsys, argv):
    argv = [str(tmp_path / a) if a == "NOPE" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "\n" == err[-1] and err.count("\n") == 1
    assert not (tmp_path / "NOPE").exists()
