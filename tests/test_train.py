"""The training harness: a subset model really trains (min_steps, no lr-0 first step), and a
model that barely trained is flagged."""
from selbench.benchmark.train import train_model
from selbench.config import TrainConfig


def test_warmup_on_two_steps_is_flagged_and_min_steps_fixes_it(tmp_path, tiny_model_dir, tiny_pool_rows):
    rows = tiny_pool_rows[:8]
    bad = train_model(tiny_model_dir, rows, TrainConfig(epochs=1, batch_size=4, max_length=64,
                      learning_rate=1e-2, warmup_ratio=0.5, lr_scheduler="linear"),
                      tmp_path / "bad", progress=False)
    assert bad["steps"] == 2 and bad["effective_updates"] <= 1
    assert any("barely trained" in w for w in bad["warnings"])
    good = train_model(tiny_model_dir, rows, TrainConfig(epochs=1, batch_size=4, max_length=64,
                       learning_rate=1e-2, warmup_ratio=0.0, min_steps=6),
                       tmp_path / "good", progress=False)
    assert good["steps"] == 6 and good["effective_updates"] == 6 and good["warnings"] == []


def test_smoke_recipe_trains_every_subset_model(tmp_path):
    """The shipped smoke config: no warmup and at least 10 steps, so a 5% subset (10 rows,
    batch 8) gets 10 real updates instead of one step at lr 0."""
    from selbench.config import build_config, configs_root

    cfg = build_config([str(configs_root() / "default.yaml")])
    assert cfg.train.warmup_ratio == 0.0 and cfg.train.min_steps >= 10


def test_logging_is_not_part_of_any_cache_key(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows,
                                              monkeypatch):
    """report_to reaches TRL's SFTConfig but never a stage key (turning logging on retrains
    nothing)."""
    from test_pipeline import write_config

    from selbench.benchmark import train as tr
    from selbench.benchmark.pipeline import Pipeline
    from selbench.config import build_config

    path = write_config(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows)
    a = Pipeline(build_config([str(path)]), progress=False)
    b = Pipeline(build_config([str(path)], {"report_to": ["tensorboard"]}), progress=False)
    for p in (a, b):
        p.load_data()
    assert a.keys.train_key("full", None) == b.keys.train_key("full", None)
    seen = {}

    class Stop(Exception):
        pass

    def fake_sftconfig(**kw):
        seen.update(kw)
        raise Stop

    import trl

    monkeypatch.setattr(trl, "SFTConfig", fake_sftconfig)
    try:
        tr.train_model(tiny_model_dir, tiny_pool_rows[:4], TrainConfig(max_length=64), tmp_path / "o",
                       progress=False, report_to=["tensorboard"])
    except Stop:
        pass
    assert seen["report_to"] == ["tensorboard"]
