"""`bench leaderboard --publish DIR`: a self-contained folder (synthetic runs, no model)."""
import re

from test_figures import make_study  # noqa: E402  (tests/ is on sys.path under pytest)


def test_publish_writes_readme_csv_and_figures_with_relative_links(tmp_path, tiny_pool_rows):
    from selbench import cli

    runs = make_study(tmp_path, tiny_pool_rows)
    out = tmp_path / "study"
    rc = cli.main(["leaderboard", "--runs-dir", str(runs), "--publish", str(out), "--title", "T",
                   "--note", "A smoke-scale study: read the MDE first."])
    assert rc == 0
    md = (out / "README.md").read_text()
    assert md.startswith("# T\n") and "A smoke-scale study: read the MDE first." in md.split("## ")[0]
    for section in ("## Commands", "minimum detectable", "## Table 1", "## Table 2",
                    "## Table 1 on wizardlm only", "## Seeds", "## Paired comparisons",
                    "## Judges: agreement", "## Answer length", "## Reference-answer NLL",
                    "## Cost next to quality", "## Figures", "## Method notes",
                    "## Config fingerprints", "## Package versions"):
        assert section.lower() in md.lower(), section
    assert "bench grid g.yaml" in md and "vicuna-pairwise-v1" in md and "PWS = 1 + (W - L)" in md
    # Table 1 layout: the 100% column, 1.00 for each row
    header = [l for l in md.splitlines() if l.startswith("| selector")][0]
    assert "tinypool / m / 5%" in header and "tinypool / m / 100%" in header
    # Table 2: ablation as a signed delta vs gsnr
    t2 = md.split("## Table 2")[1].split("## ")[0]
    assert re.search(r"\| gsnr-drop: #1 G_s - G_t \| lora\s+\| [+-]\d\.\d{3}", t2)
    # links: relative only, every one resolves inside the folder
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all(not l.startswith(("/", "http")) for l in links)
    assert all((out / l).exists() for l in links)
    assert str(tmp_path) not in md
    assert (out / "leaderboard.csv").read_text().startswith("selector,")
    assert len(list((out / "figures").glob("*.png"))) == 6
