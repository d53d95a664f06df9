import numpy as np
import pytest

from selbench.leaderboard.plots import embed_2d, plot_trajectories, trajectory_points


def test_trajectory_points_relative_drop():
    norms = np.array([[[2.0, 4.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 1.0]]])  # M=2, E=2, N=2
    pts = trajectory_points(norms)
    np.testing.assert_allclose(pts, [[0, 0], [0.5, 0.25], [0, 0], [0.0, 0.5]])


def test_pca_keeps_identical_points_identical_and_distances():
    pts = np.array([[0.0, 0, 0], [0, 0, 0], [3, 4, 0], [0, 0, 0]])
    xy, var = embed_2d(pts)
    assert np.allclose(xy[0], xy[1]) and np.allclose(xy[0], xy[3])  # t-SNE would split them
    assert np.isclose(np.linalg.norm(xy[2] - xy[0]), 5.0) and np.isclose(var.sum(), 1.0)


def test_plot_writes_png_to_figures_not_into_the_stage(tmp_path):
    prof = tmp_path / "runs" / "e" / "profiles" / "p-1234"
    prof.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(prof / "norms.npy", rng.uniform(1, 2, size=(5, 2, 40)))
    out = plot_trajectories(prof)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.parent == tmp_path / "runs" / "e" / "figures" and not list(prof.glob("*.png"))
    assert plot_trajectories(tmp_path / "runs" / "e") == out


def test_plot_without_a_profile_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench run --selector gsnr"):
        plot_trajectories(tmp_path)
