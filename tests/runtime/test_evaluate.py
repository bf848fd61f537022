"""Evaluation's interval: Student's t quantile behind the 95% half-width."""

import numpy as np
import pytest

from distmeta.runtime.evaluate import summarise, t_quantile

# Two-sided 95% critical values of Student's t, as printed in statistics tables.
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 5: 2.571, 10: 2.228, 30: 2.042, 120: 1.980, 10**9: 1.960}


@pytest.mark.parametrize("df", sorted(TABLE))
def test_t_quantile_matches_the_printed_table(df):
    assert t_quantile(0.975, df) == pytest.approx(TABLE[df], abs=5e-4)


def test_t_quantile_matches_scipy_closely():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 7, 19, 99, 599, 10**5):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9), (df, p)


def test_summary_of_3_tasks_uses_t_with_2_degrees_of_freedom():
    values = np.array([1.0, 2.0, 4.0])
    summary = summarise(values)
    assert summary["mean"] == pytest.approx(7 / 3)
    assert summary["ci95"] == pytest.approx(4.3027 * values.std(ddof=1) / np.sqrt(3), rel=1e-4)
    assert summarise(np.array([5.0]))["ci95"] is None


def test_a_run_can_be_evaluated_with_either_batch_norm(tmp_path, omniglot_dir):
    from distmeta.errors import UserError
    from distmeta.loading import load_config
    from distmeta.runtime import MetaLearner
    from distmeta.runtime.evaluate import evaluate, load_run

    config = load_config("omniglot-protonet", [f"task.data_dir={omniglot_dir}", "model.channels=8", "task.n_way=5",
                                               "iterations=2", "checkpoint_every=2"])
    assert config.model.batch_norm == "population"  # Snell's: the preset's
    with MetaLearner(config, out_dir=tmp_path / "run") as learner:
        learner.train()
        # The preset trains on the val characters (Snell's train + val): none are held out.
        with pytest.raises(UserError, match=r"^validation\.split: got 'val'; task\.trainval trains on the val"):
            learner.validate(2, "val")
    with pytest.raises(UserError, match=r"^--split: got 'val'; task\.trainval trains on the val characters"):
        evaluate(tmp_path / "run", tasks=4, split="val")
    for item in ("task.trainval=false", "task.split=maml"):  # val (or maml's test) holds trained-on classes
        with pytest.raises(UserError, match=rf"^--set: got '{item}'; which characters the run trained on"):
            evaluate(tmp_path / "run", tasks=4, split="val", overrides=[item])
    # The shape it trained with stays the population statistics' (5-way, the preset's 5 queries).
    assert load_run(tmp_path / "run", ["task.n_way=3", "task.q_query=3"])[2].trained_shape == {
        "n_way": 5, "k_shot": 1, "q_query": 5}
    assert load_run(tmp_path / "run", [f"task.data_dir={omniglot_dir}"])[2].trained_shape is None
    scores = {bn: evaluate(tmp_path / "run", tasks=4, overrides=[f"model.batch_norm={bn}", "task.q_query=3"])
              for bn in ("population", "batch")}
    assert scores["population"]["post_adaptation"]["loss"] != scores["batch"]["post_adaptation"]["loss"]
    with pytest.raises(UserError, match="algorithm.inner_lr and model.batch_norm"):
        evaluate(tmp_path / "run", tasks=4, overrides=["model.channels=16"])
