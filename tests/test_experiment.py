"""build_experiment: what a config names, built and cross-checked once, before any Ray."""

import numpy as np
import pytest
import torch
from helpers import sine_raw

from distmeta.algorithms import ALGORITHMS
from distmeta.config import Config
from distmeta.errors import ConfigError, UserError
from distmeta.experiment import build_experiment
from distmeta.loading import load_config
from distmeta.runners.rl import RLShardRunner
from distmeta.runners.supervised import SupervisedShardRunner
from distmeta.tasks import train_task_rng


def build(source, *overrides):
    return build_experiment(load_config(source, list(overrides)))


@pytest.mark.parametrize("override, message", [
    ("algorithm.name=protonet", (r"^algorithm.name: protonet needs a classification task family; "
                                r"task.family 'sinusoid' is regression")),
    ("algorithm.name=maml_rl", r"^algorithm.name: maml_rl needs a rl task family"),
    ("task.k_shot=1", r"^unknown key 'task.k_shot'; Sinusoid takes: |^unknown key 'task.k_shot'"),
    ("task.family=nope", r"^task.family: got 'nope'; expected one of sinusoid, omniglot"),
    ("task.family=nomodule_xyz:Fam", r"^task.family: cannot import module 'nomodule_xyz'"),
    ("task.family=custom_family:Missing", r"^task.family: module 'custom_family' has no 'Missing'"),
    ("task.family=custom_family:NotAFamily", r"^task.family: 'custom_family:NotAFamily' is not a subclass"),
    ("rl.gamma=0.9", r"^rl.gamma: set for task.family 'sinusoid', which is not a meta-RL family"),
])
def test_what_the_fields_name_together_is_checked_by_the_builder(override, message):
    config = load_config("sinusoid-maml", [override])  # each field alone is fine
    with pytest.raises(ConfigError, match=message) as info:
        build_experiment(config)
    assert "\n" not in str(info.value)


def test_omniglot_options_are_checked_before_any_data_loads(omniglot_dir, tmp_path):
    base = f"task.data_dir={omniglot_dir}"
    with pytest.raises(ConfigError, match=r"^task.n_way: got 101; the val split has 100 classes"):
        build("omniglot-maml", base, "task.n_way=101")
    with pytest.raises(ConfigError, match=r"^task.k_shot \+ task.q_query: got 5 \+ 16 = 21"):
        build("omniglot-maml", base, "task.k_shot=5", "task.q_query=16")
    with pytest.raises(ConfigError, match=r"^task.data_dir: "):
        build("omniglot-maml", f"task.data_dir={tmp_path / 'none'}")
    with pytest.raises(ConfigError, match=r"^task.split: got 'finn'; expected one of: vinyals, maml$"):
        build("omniglot-maml", base, "task.split=finn")
    with pytest.raises(ConfigError, match=r"^task.resize: got 'lanczos'; expected one of: area, nearest$"):
        build("omniglot-maml", base, "task.resize=lanczos")
    with pytest.raises(ConfigError, match=r"^model.name: conv4 needs square images of at least 16 x 16"):
        build("omniglot-maml", base, "task.image_size=12")
    # Building reads no data: damaged files are found only by prepare(), in the driver.
    for name in ("images_background.npz", "images_evaluation.npz"):
        (tmp_path / name).write_bytes(b"not an npz")
    experiment = build("omniglot-maml", f"task.data_dir={tmp_path}")
    with pytest.raises(UserError, match=r"images_background.npz: cannot read"):
        experiment.family.prepare()


def test_user_family_by_dotted_path():
    experiment = build_experiment(Config.from_dict({"task": {"family": "custom_family:Linear", "points": 3}}))
    assert type(experiment.family).__name__ == "Linear" and experiment.family.points == 3
    with pytest.raises(ConfigError, match=r"^unknown key 'task.bogus'"):
        build_experiment(Config.from_dict({"task": {"family": "custom_family:Linear", "bogus": 3}}))
    with pytest.raises(ConfigError, match=r"^task: Picky\(points=11\) failed: at most 10 points"):
        build_experiment(Config.from_dict({"task": {"family": "custom_family:Picky", "points": 11}}))
    with pytest.raises(ConfigError, match=r"^task: Crashing\(\) failed: RuntimeError: no dataset server$"):
        build_experiment(Config.from_dict({"task": {"family": "custom_family:Crashing"}}))
    with pytest.raises(ConfigError, match=r"^task: Unfinished\(\) failed: Can't instantiate abstract"):
        build_experiment(Config.from_dict({"task": {"family": "custom_family:Unfinished"}}))
    # A user's `float | None` field is typed like the config's own Optional fields.
    noisy = Config.from_dict({"task": {"family": "custom_family:Linear", "noise": 1}})
    assert build_experiment(noisy).family.noise == 1.0
    with pytest.raises(ConfigError, match=r"^task.noise: got 'loud'; expected a number"):
        build_experiment(Config.from_dict({"task": {"family": "custom_family:Linear", "noise": "loud"}}))


def test_the_family_picks_the_runner_and_maml_means_maml_rl_on_gym():
    sine = build("sinusoid-maml")
    assert sine.runner_class is SupervisedShardRunner and sine.algorithm is ALGORITHMS["maml"]
    assert sine.score_names == ("loss",) and sine.outer_steps == 1 and not sine.is_rl
    for name in ("maml", "maml_rl"):
        nav = build("nav2d-maml", f"algorithm.name={name}")
        assert nav.runner_class is RLShardRunner and nav.algorithm is ALGORITHMS["maml_rl"]
        assert nav.score_names == ("return",) and nav.outer_steps == 3 and nav.is_rl
        assert nav.config.algorithm.name == name  # the config keeps what the user wrote


def test_initial_parameters_depend_on_the_seed_alone():
    before = torch.get_rng_state()
    a = build("sinusoid-maml", "seed=4").initial_meta_params()
    b = build("sinusoid-maml", "seed=4", "num_workers=0").initial_meta_params()
    c = build("sinusoid-maml", "seed=5").initial_meta_params()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_a_family_brings_its_own_loss():
    """`TaskFamily.loss` is what the inner loop descends and the query is scored with: an
    L1 family's meta-gradient is the gradient of its own L1 objective, not of MSE."""
    raw = sine_raw(task={"family": "custom_family:AbsoluteLinear", "points": 4})
    l1 = build_experiment(Config.from_dict(raw))
    raw["task"]["family"] = "custom_family:Linear"
    mse = build_experiment(Config.from_dict(raw))
    meta = l1.initial_meta_params()
    flat = l1.make_runner().layout.flatten(meta).numpy()
    got_l1, _, metrics = l1.make_runner().meta_grad(flat, 0, [0])
    got_mse, _, _ = mse.make_runner().meta_grad(flat, 0, [0])

    # The same objective written out by hand: one inner SGD step on the support L1 loss.
    task = l1.family.sample_task(train_task_rng(raw["seed"], 0, 0), "train")
    x, y, qx, qy = (torch.from_numpy(task[k]) for k in ("support_x", "support_y", "query_x", "query_y"))
    params = {k: v.clone().requires_grad_() for k, v in meta.items()}
    model = l1.network()

    def forward(p, inputs):
        return torch.func.functional_call(model, p, (inputs,))

    inner = torch.autograd.grad((forward(params, x) - y).abs().mean(), list(params.values()), create_graph=True)
    adapted = {k: v - raw["algorithm"]["inner_lr"] * g for (k, v), g in zip(params.items(), inner)}
    query_loss = (forward(adapted, qx) - qy).abs().mean()
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(query_loss, list(params.values()))])
    np.testing.assert_allclose(got_l1, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert metrics["post_loss"] == pytest.approx(query_loss.item(), rel=1e-5)
    assert not np.allclose(got_l1, got_mse, rtol=1e-2)


def test_a_model_too_large_to_allocate_is_one_line():
    with pytest.raises(ConfigError, match=r"^model: cannot be built here \(RuntimeError: .*can't allocate memory.*\); "
                                          r"choose smaller model\.\* sizes$") as info:
        build("sinusoid-maml", "model.hidden_sizes=[1000000,1000000]")
    assert "\n" not in str(info.value)
