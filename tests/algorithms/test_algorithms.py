"""Algorithms as pure functions: exact meta-gradients, vmap == loop, each algorithm's rule."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distmeta.algorithms import ALGORITHMS, Problem, evaluate_shard, shard_meta_grad
from distmeta.algorithms.reptile import mini_batches
from distmeta.config import AlgorithmConfig, ModelConfig
from distmeta.models import Conv4, make_model
from distmeta.tasks import train_task_rng
from distmeta.tasks.episodes import EpisodeFamily
from distmeta.tasks.sinusoid import Sinusoid


@dataclasses.dataclass
class Labels(EpisodeFamily):
    """N-way classification's loss and scores (cross-entropy, accuracy), without images."""

    def split_images(self, split):
        raise NotImplementedError


def make_problem(model, kind, n_classes=0):
    """The model with the task loss of a family of this kind (TaskFamily's defaults)."""
    family = Sinusoid() if kind == "regression" else Labels(n_way=n_classes)
    return Problem(model, family.loss, family.scores, n_classes)


def sinusoid_setup(n_tasks=4, dtype=torch.float64, hidden=(8, 8)):
    torch.manual_seed(0)
    family = Sinusoid(k_support=5, k_query=6)
    model = make_model(ModelConfig(hidden_sizes=hidden), family.input_shape, 1).to(dtype)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tasks = {k: v.to(dtype) for k, v in
             family.sample([train_task_rng(1, 0, i) for i in range(n_tasks)], "train").items()}
    return make_problem(model, "regression"), params, tasks


def reference_maml_grad(params, tasks, lr, steps, first_order):
    """MAML's meta-gradient by plain autograd on a hand-written MLP (no torch.func)."""
    meta = {k: v.clone().requires_grad_() for k, v in params.items()}
    names = sorted({k.rsplit(".", 1)[0] for k in meta})  # layers in order: body.1, body.3, head

    def forward(p, x):
        h = x
        for i, layer in enumerate(names):
            h = h @ p[f"{layer}.weight"].T + p[f"{layer}.bias"]
            if i < len(names) - 1:
                h = torch.relu(h)
        return h

    total = 0
    for i in range(tasks["support_x"].shape[0]):
        fast = dict(meta)
        for _ in range(steps):
            loss = F.mse_loss(forward(fast, tasks["support_x"][i]), tasks["support_y"][i])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {k: v - lr * g for (k, v), g in zip(fast.items(), grads)}
        total = total + F.mse_loss(forward(fast, tasks["query_x"][i]), tasks["query_y"][i])
    grads = torch.autograd.grad(total, list(meta.values()))
    return dict(zip(meta, grads))


@pytest.mark.parametrize("batching", ["vmap", "loop"])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_matches_autograd_reference(batching, first_order):
    problem, params, tasks = sinusoid_setup()
    cfg = AlgorithmConfig(name="maml", inner_lr=0.05, inner_steps=2, first_order=first_order)
    grads, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, problem, cfg, batching)
    ref = reference_maml_grad(params, tasks, 0.05, 2, first_order)
    for k in ref:
        torch.testing.assert_close(grads[k], ref[k], rtol=1e-10, atol=1e-12)


def test_second_order_terms_are_present():
    problem, params, tasks = sinusoid_setup()
    second = AlgorithmConfig(name="maml", inner_lr=0.05, inner_steps=2)
    first = dataclasses.replace(second, first_order=True)
    g2, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, problem, second, "vmap")
    g1, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, problem, first, "vmap")
    rel = max(((g2[k] - g1[k]).norm() / g2[k].norm()).item() for k in g2)
    assert rel > 1e-3  # well above float64 noise: the Hessian-vector terms are in g2


@pytest.mark.parametrize("name", ["maml", "metasgd", "anil", "reptile"])
def test_vmap_equals_loop(name):
    problem, params, tasks = sinusoid_setup(n_tasks=5)
    cfg = AlgorithmConfig(name=name, inner_lr=0.05, inner_steps=2)
    algo = ALGORITHMS[name]
    meta = algo.init(params, cfg)
    gv, mv = shard_meta_grad(algo, meta, {}, tasks, problem, cfg, "vmap")
    gl, ml = shard_meta_grad(algo, meta, {}, tasks, problem, cfg, "loop")
    assert gv.keys() == meta.keys()
    for k in gv:
        torch.testing.assert_close(gv[k], gl[k], rtol=1e-10, atol=1e-12)
    for k in mv:
        torch.testing.assert_close(mv[k], ml[k], rtol=1e-10, atol=1e-12)
    ev = evaluate_shard(algo, meta, {}, tasks, problem, cfg, 3, "vmap")
    el = evaluate_shard(algo, meta, {}, tasks, problem, cfg, 3, "loop")
    for k in ev:
        assert ev[k].shape == (5,)
        torch.testing.assert_close(ev[k], el[k], rtol=1e-10, atol=1e-12)


def test_anil_adapts_only_the_head():
    problem, params, tasks = sinusoid_setup(n_tasks=1)
    cfg = AlgorithmConfig(name="anil", inner_lr=0.1, inner_steps=1)
    support = (tasks["support_x"][0], tasks["support_y"][0])
    adapted = ALGORITHMS["anil"].adapt(params, {}, support, problem, cfg, 1)
    changed = {k for k in params if not torch.equal(adapted[k], params[k])}
    assert changed == {"head.weight", "head.bias"}
    grads, _ = shard_meta_grad(ALGORITHMS["anil"], params, {}, tasks, problem, cfg, "vmap")
    assert all(grads[k].abs().sum() > 0 for k in params)  # the outer step still moves the body


def test_metasgd_learns_per_parameter_rates():
    problem, params, tasks = sinusoid_setup()
    cfg = AlgorithmConfig(name="metasgd", inner_lr=0.05)
    algo = ALGORITHMS["metasgd"]
    meta = algo.init(params, cfg)
    assert len(meta) == 2 * len(params)
    assert algo.model_params(meta).keys() == params.keys()
    grads, _ = shard_meta_grad(algo, meta, {}, tasks, problem, cfg, "vmap")
    rate_grads = [g for k, g in grads.items() if k.startswith("inner_lr:")]
    assert len(rate_grads) == len(params) and all(g.abs().sum() > 0 for g in rate_grads)
    # With every rate equal to inner_lr, Meta-SGD's initialisation gradient is MAML's.
    maml, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, problem, cfg, "vmap")
    for k in params:
        torch.testing.assert_close(grads[k], maml[k], rtol=1e-10, atol=1e-12)


def test_reptile_gradient_is_the_step_toward_parameters_trained_on_the_whole_episode():
    """Training takes support and query examples together, one mini-batch per step (11
    points, 3 steps: batches of 3); the step toward them is SGD by hand on those batches."""
    problem, params, tasks = sinusoid_setup(n_tasks=2)
    cfg = AlgorithmConfig(name="reptile", inner_lr=0.02, inner_steps=3)
    algo = ALGORITHMS["reptile"]
    grads, metrics = shard_meta_grad(algo, params, {}, tasks, problem, cfg, "loop")
    expected = {k: 0 for k in params}
    for i in range(2):
        x = torch.cat([tasks["support_x"][i], tasks["query_x"][i]])
        y = torch.cat([tasks["support_y"][i], tasks["query_y"][i]])
        adapted = {k: v.clone().requires_grad_() for k, v in params.items()}
        for step in range(3):
            rows = slice(3 * step, 3 * step + 3)
            loss = problem.loss(problem.forward(adapted, {}, x[rows]), y[rows])
            step_grads = torch.autograd.grad(loss, list(adapted.values()))
            adapted = {k: (v - 0.02 * g).detach().requires_grad_() for (k, v), g in zip(adapted.items(), step_grads)}
        expected = {k: expected[k] + params[k] - adapted[k].detach() for k in params}
    for k in params:
        torch.testing.assert_close(grads[k], expected[k])
    assert metrics["post_loss"] < metrics["pre_loss"]  # the fit of the first batch trained on


def test_reptile_batches_take_every_class_and_cycle_through_the_examples():
    y = torch.cat([torch.arange(5), torch.arange(5).repeat_interleave(9)])  # 1 shot + 9 queries, class-major
    batches = mini_batches(y, 5, 5)
    assert [len(b) for b in batches] == [10] * 5  # Nichol's 10 of 10 shots per class, 5 steps
    assert sorted(torch.cat(batches).tolist()) == list(range(50))  # each example once
    assert all(sorted(y[b].tolist()) == sorted([0, 1, 2, 3, 4] * 2) for b in batches)
    one_shot = mini_batches(torch.arange(5), 5, 50)  # test: the 5 support images every step
    assert all(b.tolist() == [0, 1, 2, 3, 4] for b in one_shot)
    five_shot = mini_batches(torch.arange(5).repeat_interleave(5), 5, 50)  # batches of 5, one per class
    assert [len(b) for b in five_shot] == [5] * 50
    assert sorted(torch.cat(five_shot[:5]).tolist()) == list(range(25))
    assert [b.tolist() for b in mini_batches(torch.zeros(7), 0, 2)] == [[0, 1, 2], [3, 4, 5]]


def test_protonet_classifies_by_nearest_prototype():
    # An identity-like embedding: a 2-d MLP with no hidden nonlinearity effect on separable data.
    torch.manual_seed(0)
    model = make_model(ModelConfig(hidden_sizes=(16,)), (2,), None).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    problem = make_problem(model, "classification", n_classes=3)
    centres = torch.tensor([[-20.0, 0.0], [20.0, 0.0], [0.0, 20.0]], dtype=torch.float64)
    support_y = torch.tensor([0, 1, 2, 0, 1, 2])
    query_y = torch.tensor([2, 1, 0])
    support_x = centres[support_y] + 0.1 * torch.randn(6, 2, dtype=torch.float64)
    query_x = centres[query_y] + 0.1 * torch.randn(3, 2, dtype=torch.float64)
    logits = ALGORITHMS["protonet"].predict(params, {}, (support_x, support_y), query_x, problem)
    assert logits.shape == (3, 3)
    assert torch.equal(logits.argmax(-1), query_y)
    task = {"support_x": support_x, "support_y": support_y, "query_x": query_x, "query_y": query_y}
    cfg = AlgorithmConfig(name="protonet")
    grads, metrics = shard_meta_grad(ALGORITHMS["protonet"], params, {},
                                     {k: v[None] for k, v in task.items()}, problem, cfg, "vmap")
    assert metrics["post_accuracy"] == 1.0
    torch.testing.assert_close(metrics["post_loss"], F.cross_entropy(logits, query_y))
    assert all(torch.isfinite(g).all() for g in grads.values())


class SmoothBatchNormNet(torch.nn.Module):
    """Conv4's normalisation block with smooth activations: with ReLU and max-pool, the
    adapted parameters jump where an inner-loop activation changes sign, which finite
    differences cannot see past."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4, track_running_stats=False),
            torch.nn.Tanh(),
            torch.nn.AvgPool2d(4),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


def image_tasks(n_tasks, size):
    rng = np.random.default_rng(0)
    return {
        "support_x": torch.from_numpy(rng.random((n_tasks, 6, 1, size, size))),
        "support_y": torch.tensor([[0, 1, 2, 0, 1, 2]] * n_tasks),
        "query_x": torch.from_numpy(rng.random((n_tasks, 3, 1, size, size))),
        "query_y": torch.tensor([[2, 0, 1]] * n_tasks),
    }


def test_conv4_vmapped_second_order_meta_gradient_equals_loop():
    torch.manual_seed(0)
    model = Conv4(in_channels=1, image_size=16, channels=4, out_features=3).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    problem, tasks = make_problem(model, "classification", 3), image_tasks(3, 16)
    cfg = AlgorithmConfig(name="maml", inner_lr=0.1, inner_steps=2)
    gv, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, problem, cfg, "vmap")
    gl, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, problem, cfg, "loop")
    assert gv["body.1.weight"].abs().sum() > 0  # BatchNorm's scale gets a meta-gradient
    for k in gv:
        torch.testing.assert_close(gv[k], gl[k], rtol=1e-9, atol=1e-12)


def assert_meta_gradient_is_central_differences(model, tasks, cfg, batching, eps, tolerance):
    """MAML's shard meta-gradient (batched as `batching`) against float64 central
    differences of the meta-loss along three random directions."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    problem, algo = make_problem(model, "classification", 3), ALGORITHMS["maml"]
    grads, _ = shard_meta_grad(algo, params, {}, tasks, problem, cfg, batching)

    def meta_loss(p):
        return shard_meta_grad(algo, p, {}, tasks, problem, cfg, "loop")[1]["post_loss"].item()

    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
        numeric = (meta_loss({k: params[k] + eps * direction[k] for k in params})
                   - meta_loss({k: params[k] - eps * direction[k] for k in params})) / (2 * eps)
        analytic = sum((grads[k] * direction[k]).sum().item() for k in params)
        assert abs(numeric - analytic) <= tolerance * max(1.0, abs(analytic))


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_batchnorm_second_order_gradient_matches_finite_differences(batching):
    """The BatchNorm trap: with torch 2.13, one `grad` of a vmapped second-order loss through
    BatchNorm's adapted scale is wrong; a `vmap` of per-task `grad`s (distmeta's task
    batching) and the loop must agree with central differences in float64."""
    torch.manual_seed(0)
    cfg = AlgorithmConfig(name="maml", inner_lr=0.5, inner_steps=2)
    assert_meta_gradient_is_central_differences(SmoothBatchNormNet().double(), image_tasks(2, 8), cfg, batching,
                                                eps=1e-5, tolerance=1e-7)


def test_conv4_pooling_before_relu_is_the_usual_block():
    """Conv4 pools before its ReLU; outputs and second-order meta-gradients are those of the
    usual conv, BatchNorm, ReLU, max-pool order, bit for bit."""
    torch.manual_seed(0)
    model = Conv4(in_channels=1, image_size=16, channels=4, out_features=3).double()
    usual = copy.deepcopy(model)
    blocks = list(usual.body)
    for i in range(0, 16, 4):
        blocks[i + 2], blocks[i + 3] = blocks[i + 3], blocks[i + 2]
    usual.body = torch.nn.Sequential(*blocks)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tasks = image_tasks(2, 16)
    cfg = AlgorithmConfig(name="maml", inner_lr=0.1, inner_steps=2)
    ours, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, make_problem(model, "classification", 3), cfg, "loop")
    theirs, _ = shard_meta_grad(ALGORITHMS["maml"], params, {}, tasks, make_problem(usual, "classification", 3), cfg, "loop")
    assert isinstance(usual.body[2], torch.nn.ReLU) and isinstance(model.body[2], torch.nn.MaxPool2d)
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


@pytest.mark.parametrize("name", ["maml", "anil", "metasgd", "reptile", "protonet"])
@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_training_scores_before_adaptation_are_the_support_sets_and_evaluation_scores_the_query(name, batching):
    """Meta-training's pre-adaptation scores come free from the inner loop's first forward:
    the support set at the meta-parameters (Reptile's: its first mini-batch of the episode).
    Evaluation scores the query set before and after.
    ProtoNets adapts nothing: the same scores both times."""
    torch.manual_seed(0)
    model = Conv4(in_channels=1, image_size=16, channels=4, out_features=None if name == "protonet" else 3).double()
    problem, tasks = make_problem(model, "classification", 3), image_tasks(3, 16)
    algo, cfg = ALGORITHMS[name], AlgorithmConfig(name=name, inner_lr=0.1, inner_steps=2)
    meta = algo.init({k: v.detach() for k, v in model.named_parameters()}, cfg)
    _, train = shard_meta_grad(algo, meta, {}, tasks, problem, cfg, batching)
    evaluated = evaluate_shard(algo, meta, {}, tasks, problem, cfg, 2, batching)
    before = {"support": [], "query": [], "episode": []}
    for i in range(3):
        for phase, scores in before.items():
            if phase == "episode":  # Reptile's first mini-batch of the whole episode
                y = torch.cat([tasks["support_y"][i], tasks["query_y"][i]])
                rows = mini_batches(y, 3, cfg.inner_steps)[0]
                x, y = torch.cat([tasks["support_x"][i], tasks["query_x"][i]])[rows], y[rows]
            else:
                x, y = tasks[f"{phase}_x"][i], tasks[f"{phase}_y"][i]
            outputs = algo.predict(algo.model_params(meta), {}, (tasks["support_x"][i], tasks["support_y"][i]), x, problem)
            scores.append(problem.scores(outputs, y))
    for score in ("loss", "accuracy"):
        query = torch.stack([s[score] for s in before["query"]])
        torch.testing.assert_close(evaluated[f"pre_{score}"], query)
        if name == "protonet":
            torch.testing.assert_close(train[f"pre_{score}"], train[f"post_{score}"])
            torch.testing.assert_close(evaluated[f"pre_{score}"], evaluated[f"post_{score}"])
        else:  # Reptile trains on the whole episode and scores its first batch
            support = torch.stack([s[score] for s in before["episode" if name == "reptile" else "support"]])
            torch.testing.assert_close(train[f"pre_{score}"], support.sum())
    if name != "protonet":
        query_loss = torch.stack([s["loss"] for s in before["query"]]).sum()
        assert abs(float(train["pre_loss"] - query_loss)) > 1e-3  # the support set, not the query


@pytest.mark.parametrize(("size", "first_rows"), [(28, (0, 1, 2)), (7, (-1, 0, 1))])
def test_strided_conv4_pads_as_tensorflows_same(size, first_rows):
    """TF's SAME padding at stride 2 pads an even side only at the bottom and right: output
    row 0 sees input rows 0-2 (28 -> 14); an odd side on both: rows -1..1 (7 -> 4)."""
    model = Conv4(in_channels=1, image_size=size, channels=1, out_features=None, downsample="strided")
    pad, conv = model.body[0], model.body[1]
    for row in range(4):
        for col in range(4):
            image = torch.zeros(1, 1, size, size)
            image[0, 0, row, col] = 1.0
            with torch.no_grad():
                out = conv(pad(image))[0, 0, 0, 0] - conv.bias[0]
                expected = conv.weight[0, 0, row - first_rows[0], col - first_rows[0]] \
                    if row in first_rows and col in first_rows else torch.tensor(0.0)
            assert float(out) == pytest.approx(float(expected), abs=1e-7), (row, col)
    assert conv(pad(torch.zeros(1, 1, size, size))).shape[-1] == -(-size // 2)


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_strided_conv4_second_order_gradient_matches_finite_differences(batching):
    torch.manual_seed(0)
    model = Conv4(in_channels=1, image_size=16, channels=4, out_features=3, downsample="strided").double()
    cfg = AlgorithmConfig(name="maml", inner_lr=0.3, inner_steps=1)
    assert_meta_gradient_is_central_differences(model, image_tasks(2, 16), cfg, batching, eps=1e-6, tolerance=1e-6)
