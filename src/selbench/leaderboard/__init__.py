from .aggregate import collect
from .render import render, write_leaderboard

__all__ = ["collect", "render", "write_leaderboard"]
