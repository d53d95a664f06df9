import numpy as np

from selbench.leaderboard.plots import plot_trajectories, trajectory_points


def test_trajectory_points_relative_drop():
    norms = np.array([[[2.0, 4.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 1.0]]])  # M=2, E=2, N=2
    pts = trajectory_points(norms)
    np.testing.assert_allclose(pts, [[0, 0], [0.5, 0.25], [0, 0], [0.0, 0.5]])


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "norms.npy", rng.uniform(1, 2, size=(5, 2, 40)))
    out = plot_trajectories(tmp_path)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
