"""The driver in-process (`num_workers: 0`): learning, checkpoints, resume, bad input."""

import json
import logging
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import train

from distmeta.config import Config
from distmeta.errors import DivergedError, RunError, UserError
from distmeta.runtime import MetaLearner, split_shards
from distmeta.runtime.checkpoint import list_checkpoints, load_checkpoint
from distmeta.runtime.evaluate import evaluate


def params_of(learner):
    return {k: v.detach().clone() for k, v in learner.meta.items()}


@pytest.mark.parametrize("n_tasks, n_shards", [(25, 1), (25, 2), (5, 2), (7, 3), (4, 4)])
def test_shards_are_balanced_and_cover_every_task_once(n_tasks, n_shards):
    shards = split_shards(n_tasks, n_shards)
    assert len(shards) == n_shards and [i for s in shards for i in s] == list(range(n_tasks))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_maml_learns_sinusoids(sine_config):
    cfg = sine_config(iterations=300, meta_batch_size=10, **{"model.hidden_sizes": "[40, 40]",
                      "algorithm.inner_lr": 0.01, "algorithm.outer_lr": 0.001})
    learner = MetaLearner(cfg)
    before = learner.validate(200, "test")["post_adaptation"]["loss"]
    first = learner.step()
    learner.train()
    assert learner.iteration == 300
    # Meta-training lowers post-adaptation loss on held-out tasks well below the start.
    after = learner.validate(200, "test")["post_adaptation"]["loss"]
    assert after < 0.8 * before, (before, after)
    assert first["post_adaptation"]["loss"] > 0


def test_divergence_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, sine_config):
    learner = MetaLearner(sine_config(iterations=50, checkpoint_every=1), out_dir=tmp_path)
    for _ in range(3):
        learner.step()
    learner.save_checkpoint()
    with torch.no_grad():
        learner.meta["head.bias"].fill_(float("inf"))  # as a blown-up outer step leaves it
    with pytest.raises(DivergedError, match=r"^meta-gradient: not finite at iteration 4 ") as info:
        learner.train()
    assert isinstance(info.value, RunError) and not isinstance(info.value, UserError)  # exit 1
    state = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in state["meta_params"].values())


def test_gradient_clipping_bounds_the_step(sine_config):
    # SGD with lr 1 makes the step checkable: its length is the clipped gradient norm.
    sgd = MetaLearner(sine_config(**{"algorithm.grad_clip": 1e-3, "algorithm.outer_optimizer": "sgd",
                                     "algorithm.outer_lr": 1.0}))
    start = sgd.layout.flatten(sgd.meta)
    line = sgd.step()
    assert line["grad_norm"] > 1e-2  # reported before clipping
    assert abs(float((sgd.layout.flatten(sgd.meta) - start).norm()) - 1e-3) < 1e-6


def test_run_directory_layout_and_metrics(tmp_path, sine_config):
    cfg = sine_config(iterations=7, checkpoint_every=3)
    MetaLearner(cfg, out_dir=tmp_path).train()
    assert (tmp_path / "config.yaml").is_file()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 8))
    for key in ("iteration", "meta_loss", "pre_adaptation", "post_adaptation", "tasks_per_s", "time_s"):
        assert key in lines[0]
    assert set(lines[0]["post_adaptation"]) == {"loss"}
    # Checkpoints at 3, 6 and the end (7); none half-written.
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["ckpt-0000003.pt", "ckpt-0000006.pt", "ckpt-0000007.pt"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    state = load_checkpoint(tmp_path / "checkpoints" / "ckpt-0000007.pt")
    assert state["iteration"] == 7 and state["config"] == cfg.to_dict()
    assert {"meta_params", "optimizer", "torch_rng"} <= set(state)


def test_a_time_budget_stops_early_and_checkpoints_where_it_stops(tmp_path, sine_config):
    learner = MetaLearner(sine_config(iterations=10_000, checkpoint_every=1000), out_dir=tmp_path)
    line = learner.train(time_budget_s=0.5)
    assert 0 < learner.iteration < 10_000 and line["iteration"] == learner.iteration
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == f"ckpt-{learner.iteration:07d}.pt"
    learner.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == learner.iteration


def test_only_the_newest_checkpoints_are_kept(tmp_path, sine_config):
    cfg = sine_config(iterations=6, checkpoint_every=1, **{"runtime.keep_checkpoints": 2})
    MetaLearner(cfg, out_dir=tmp_path).train()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "ckpt-0000005.pt", "ckpt-0000006.pt"]


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "reptile"])
def test_resume_continues_exactly(tmp_path, sine_config, algorithm):
    name = {"algorithm.name": algorithm}
    whole = MetaLearner(sine_config(iterations=20, **name))
    whole.train()
    MetaLearner(sine_config(iterations=10, **name), out_dir=tmp_path).train()
    resumed = MetaLearner(sine_config(iterations=20, **name), out_dir=tmp_path, resume=True)
    assert resumed.iteration == 10
    resumed.train()
    for k, v in params_of(whole).items():
        assert torch.equal(v, params_of(resumed)[k]), k
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 21))


def test_resume_drops_metrics_past_the_checkpoint(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=7, checkpoint_every=5), out_dir=tmp_path).train()
    (tmp_path / "checkpoints" / "ckpt-0000007.pt").unlink()  # as if killed after iteration 7
    learner = MetaLearner(sine_config(iterations=9, checkpoint_every=5), out_dir=tmp_path, resume=True)
    assert learner.iteration == 5
    learner.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 10))


def test_resume_after_a_line_cut_short(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=5, checkpoint_every=5), out_dir=tmp_path).train()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 6, "me')  # the kill came mid-write
    learner = MetaLearner(sine_config(iterations=7, checkpoint_every=5), out_dir=tmp_path, resume=True)
    learner.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 8))


def test_a_refused_resume_changes_no_file(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=4, checkpoint_every=2), out_dir=tmp_path).train()
    (tmp_path / "checkpoints" / "ckpt-0000004.pt").unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(UserError, match=r"^--resume: config key 'algorithm.outer_lr' is 0.5"):
        MetaLearner(sine_config(iterations=8, **{"algorithm.outer_lr": 0.5}), out_dir=tmp_path,
                    resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_run_directory_errors(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=2), out_dir=tmp_path).train()
    with pytest.raises(UserError, match=r"^--out: .* already holds a run; pass --resume"):
        MetaLearner(sine_config(iterations=2), out_dir=tmp_path)
    with pytest.raises(UserError, match=r"^--resume: config key 'seed' is 4 but the run in .* used 3"):
        MetaLearner(sine_config(iterations=4, seed=4), out_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match=r"^iterations: got 1, but the checkpoint is at iteration 2"):
        MetaLearner(sine_config(iterations=1), out_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match=r"^--resume: no checkpoint in "):
        MetaLearner(sine_config(), out_dir=tmp_path / "empty", resume=True)


def test_a_task_option_unset_in_the_run_resumes_at_its_default(tmp_path):
    """A run's config.yaml lists the task options it was given; an option left out (as one a
    family gained after the run started) is the family's default when a resume compares."""
    from helpers import sine_raw

    def config(**task):
        return Config.from_dict(sine_raw(iterations=4, task={"family": "sinusoid", "k_support": 5, **task}))

    MetaLearner(config(), out_dir=tmp_path).train()  # k_query unset: the default, 10
    with pytest.raises(UserError, match=r"^--resume: config key 'task.k_query' is 7 but the run in .* used 10"):
        MetaLearner(config(k_query=7), out_dir=tmp_path, resume=True)
    with MetaLearner(config(k_query=10), out_dir=tmp_path, resume=True) as learner:
        assert learner.iteration == 4


def test_a_config_key_the_run_predates_resumes_at_its_default(tmp_path, sine_config):
    """A run started before distmeta gained a key (its saved config lacks it) ran with that
    key's default: resuming with the default works, with another value names the key."""
    with MetaLearner(sine_config(iterations=4, checkpoint_every=100), out_dir=tmp_path) as learner:
        learner.step()  # no checkpoint yet: the resume compares the run's config.yaml
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["algorithm"]["grad_clip"]
    del saved["model"]["channels"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match=r"^--resume: config key 'algorithm.grad_clip' is 1.0 but the run in .* used None"):
        MetaLearner(sine_config(iterations=4, **{"algorithm.grad_clip": 1.0}), out_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match=r"^--resume: config key 'model.channels' is 8 but the run in .* used 64"):
        MetaLearner(sine_config(iterations=4, **{"model.channels": 8}), out_dir=tmp_path, resume=True)
    with MetaLearner(sine_config(iterations=4, checkpoint_every=100), out_dir=tmp_path, resume=True) as learner:
        assert learner.iteration == 0


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tmp_path, sine_config):
    """Killed before any checkpoint (three iterations done, none saved): `--resume` starts
    over with the run's config, drops the three lines and ends as a fresh run does."""
    with MetaLearner(sine_config(iterations=6, checkpoint_every=100), out_dir=tmp_path / "run") as learner:
        for _ in range(3):
            learner.step()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))
    with pytest.raises(UserError, match=r"^--resume: config key 'seed' is 4 but the run in .* used 3"):
        MetaLearner(sine_config(iterations=6, checkpoint_every=100, seed=4), out_dir=tmp_path / "run", resume=True)
    with MetaLearner(sine_config(iterations=6, checkpoint_every=100), out_dir=tmp_path / "run", resume=True) as learner:
        assert learner.iteration == 0
        learner.train()
        resumed = {k: v.detach().clone() for k, v in learner.meta.items()}
    fresh = train(sine_config(iterations=6, checkpoint_every=100))
    for k in fresh:
        assert torch.equal(fresh[k], resumed[k]), k
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4, 5, 6]
    (tmp_path / "run" / "config.yaml").write_text("- not: a config\n")
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        ckpt.unlink()
    with pytest.raises(UserError, match=r"^--resume: .*config.yaml is not a run's config"):
        MetaLearner(sine_config(iterations=6), out_dir=tmp_path / "run", resume=True)


def test_damaged_checkpoints_are_refused_in_one_line(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=2), out_dir=tmp_path).train()
    ckpt = tmp_path / "checkpoints" / "ckpt-0000002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match=r"^checkpoint: cannot read .*ckpt-0000002.pt") as info:
        evaluate(tmp_path)
    assert "\n" not in str(info.value)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(UserError, match=r"^checkpoint: .*other.pt is not a distmeta checkpoint"):
        evaluate(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^checkpoint: no checkpoint in run directory"):
        evaluate(tmp_path / "empty")
    with pytest.raises(UserError, match=r"^checkpoint: .*missing does not exist"):
        evaluate(tmp_path / "missing")


def test_evaluate_reports_means_and_confidence(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=3), out_dir=tmp_path).train()
    result = evaluate(tmp_path, tasks=30, split="val", steps=2)
    assert result["tasks"] == 30 and result["split"] == "val" and result["inner_steps"] == 2
    for phase in ("pre_adaptation", "post_adaptation"):
        assert set(result[phase]) == {"loss"}
        assert result[phase]["loss"]["mean"] > 0 and result[phase]["loss"]["ci95"] > 0
    # The same tasks and parameters give the same numbers: evaluation is deterministic.
    assert evaluate(tmp_path, tasks=30, split="val", steps=2) == result
    zero = evaluate(tmp_path, tasks=30, split="val", steps=0)
    assert zero["pre_adaptation"] == zero["post_adaptation"]
    # A single task has no spread to give a confidence half-width.
    one = evaluate(tmp_path, tasks=1, split="val", steps=2)
    assert one["post_adaptation"]["loss"]["ci95"] is None
    other_tasks = evaluate(tmp_path, tasks=30, split="val", steps=2, seed=1)
    assert other_tasks["post_adaptation"] != result["post_adaptation"]


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": 0}, r"^--tasks: got 0"),
    ({"split": "dev"}, r"^--split: got 'dev'; expected one of train, val, test"),
    ({"steps": -1}, r"^--steps: got -1"),
    ({"steps": 10**9}, r"^--steps: got 1000000000; expected at most 10000$"),
    ({"tasks": 10**10}, r"^--tasks: got 10000000000; expected at most 1000000$"),
    ({"overrides": ["algorithm.name=reptile"]}, r"^--set: got 'algorithm.name=reptile'"),
    ({"overrides": ["model.hidden_sizes=[3]"]}, r"^--set: got 'model.hidden_sizes"),
])
def test_evaluate_rejects_bad_input(tmp_path, sine_config, kwargs, message):
    MetaLearner(sine_config(iterations=1), out_dir=tmp_path).train()
    with pytest.raises(UserError, match=message):
        evaluate(tmp_path, **kwargs)


def test_load_state_continues_another_learners_state_with_its_own_outer_lr(sine_config):
    source = MetaLearner(sine_config(**{"algorithm.outer_lr": 0.01}))
    for _ in range(3):
        source.step()
    target = MetaLearner(sine_config(**{"algorithm.outer_lr": 0.002, "algorithm.inner_lr": 0.05}))
    target.load_state(source.state())
    assert target.iteration == 3 and target.optimizer.param_groups[0]["lr"] == 0.002
    for k, v in source.meta.items():
        assert torch.equal(target.meta[k], v)
    assert torch.equal(target.optimizer.state_dict()["state"][0]["exp_avg"],
                       source.optimizer.state_dict()["state"][0]["exp_avg"])
    # The same state and config continue exactly as the source does.
    twin = MetaLearner(sine_config(**{"algorithm.outer_lr": 0.01}))
    twin.load_state(source.state())
    assert twin.step()["meta_loss"] == source.step()["meta_loss"]
    wider = MetaLearner(sine_config(**{"model.hidden_sizes": "[32, 16]"}))
    with pytest.raises(UserError, match=r"checkpoint: its parameter body.1.bias has shape \(16,\); this config.s network needs \(32,\)"):
        wider.load_state(source.state())
    deeper = MetaLearner(sine_config(**{"model.hidden_sizes": "[16, 16, 16]"}))
    with pytest.raises(UserError, match=r"^checkpoint: it lacks parameter body.5.bias of this config.s network; "):
        deeper.load_state(source.state())
    shallower = MetaLearner(sine_config(**{"model.hidden_sizes": "[16]"}))
    with pytest.raises(UserError, match=r"^checkpoint: its parameter body.3.bias is not in this config.s network; "):
        shallower.load_state(source.state())


def test_validate_scores_the_same_held_out_tasks_as_evaluate(tmp_path, sine_config):
    learner = MetaLearner(sine_config(), out_dir=tmp_path / "run")
    learner.train()
    scores = learner.validate(7, split="val", seed=4)
    result = evaluate(tmp_path / "run", tasks=7, split="val", seed=4)
    for phase in ("pre_adaptation", "post_adaptation"):
        assert scores[phase]["loss"] == pytest.approx(result[phase]["loss"]["mean"], rel=1e-6)
    assert learner.validate(7, split="val", seed=4) == scores
    assert learner.validate(7, split="val", seed=5) != scores


def flip_a_bit_of_a_parameter(path):
    """One bit of the first meta-parameter's stored bytes flipped in the file itself: torch
    and the zip container read it back without complaint."""
    state = torch.load(path, weights_only=True)
    data = bytearray(path.read_bytes())
    stored = next(iter(state["meta_params"].values())).numpy().tobytes()
    at = bytes(data).index(stored) + len(stored) // 2
    data[at] ^= 0x04
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["iteration"] == state["iteration"]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "cannot read"),  # cut short
    (flip_a_bit_of_a_parameter, "is damaged: its contents no longer match the digest"),
])
def test_resume_skips_a_damaged_newest_checkpoint_and_ends_where_an_uninterrupted_run_ends(
        tmp_path, sine_config, caplog, damage, reason):
    whole = MetaLearner(sine_config(iterations=15, checkpoint_every=5))
    whole.train()
    MetaLearner(sine_config(iterations=10, checkpoint_every=5), out_dir=tmp_path).train()
    newest = tmp_path / "checkpoints" / "ckpt-0000010.pt"
    damage(newest)
    with pytest.raises(UserError, match=r"^checkpoint: ") as refused:
        evaluate(tmp_path)
    assert reason in str(refused.value) and "ckpt-0000010.pt" in str(refused.value)
    with caplog.at_level(logging.WARNING, logger="distmeta"):
        resumed = MetaLearner(sine_config(iterations=15, checkpoint_every=5), out_dir=tmp_path, resume=True)
    warnings = [r for r in caplog.records if r.name.startswith("distmeta")]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert warnings[0].getMessage().startswith("--resume: skipping ckpt-0000010.pt (checkpoint: ")
    assert reason in warnings[0].getMessage()
    assert resumed.iteration == 5
    resumed.train()
    for k, v in params_of(whole).items():
        assert torch.equal(v, params_of(resumed)[k]), k
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 16))
    assert load_checkpoint(newest)["iteration"] == 10  # rewritten whole on the way past it


def test_resume_with_no_readable_checkpoint_is_one_error(tmp_path, sine_config):
    MetaLearner(sine_config(iterations=4, checkpoint_every=2), out_dir=tmp_path).train()
    for path in list_checkpoints(tmp_path / "checkpoints"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"^--resume: no readable checkpoint in .*checkpoints; start it without --resume$"):
        MetaLearner(sine_config(iterations=8, checkpoint_every=2), out_dir=tmp_path, resume=True)


def test_load_is_save_read_back(tmp_path, sine_config):
    learner = MetaLearner(sine_config(iterations=6), out_dir=tmp_path / "run")
    learner.train()
    for source in (learner.save(tmp_path / "saved.pt"), tmp_path / "run"):
        loaded = MetaLearner.load(source)
        assert loaded.iteration == 6 and loaded.config == learner.config and loaded.run_dir is None
        for k, v in learner.meta.items():
            assert torch.equal(loaded.meta[k], v), k
        assert loaded.step()["meta_loss"] == MetaLearner.load(source).step()["meta_loss"]
    with pytest.raises(UserError, match=r"^checkpoint: .*nowhere.pt does not exist"):
        MetaLearner.load(tmp_path / "nowhere.pt")


def test_an_in_process_run_takes_one_torch_thread_unless_runtime_threads_says(sine_config):
    before = torch.get_num_threads()
    try:
        with MetaLearner(sine_config(**{"runtime.threads": 2})):
            assert torch.get_num_threads() == 2
        with MetaLearner(sine_config()):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_metrics_lines_reach_tensorboard_and_a_resume_replaces_what_a_kill_left(tmp_path, sine_config):
    """Every number of every metrics line is a TensorBoard scalar at its iteration. A run
    killed after iteration 5 with its checkpoint at 3 resumes from 3: TensorBoard then shows
    iterations 4 and 5 as the resumed run wrote them, once, as metrics.jsonl does."""
    from helpers import tensorboard_scalars

    config = sine_config(iterations=6, checkpoint_every=3)
    with MetaLearner(config, out_dir=tmp_path) as learner:
        learner.train(stop=lambda: learner.iteration == 3)  # stops with a checkpoint at 3
        learner.step()
        learner.step()  # 4 and 5: no checkpoint, as if killed now
    with MetaLearner(config, out_dir=tmp_path, resume=True) as learner:
        learner.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4, 5, 6]
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert {"meta_loss", "post_adaptation/loss", "pre_adaptation/loss", "grad_norm", "time_s"} <= set(scalars)
    for tag, path in (("post_adaptation/loss", ("post_adaptation", "loss")), ("grad_norm", ("grad_norm",))):
        expected = [line[path[0]][path[1]] if len(path) == 2 else line[path[0]] for line in lines]
        assert scalars[tag] == pytest.approx(expected, rel=1e-6), tag


def test_one_run_writes_a_folder_at_a_time(tmp_path, sine_config):
    """A second learner on a folder in use is refused before it writes anything; once the
    first ends, it resumes. A run that wrote between another's check and start is caught."""
    config = sine_config(iterations=4, checkpoint_every=2)
    with MetaLearner(config, out_dir=tmp_path) as first:
        first.train(stop=lambda: first.iteration == 2)
        before = (tmp_path / "metrics.jsonl").read_bytes()
        with pytest.raises(UserError, match=rf"^--out: {tmp_path} is in use by another run or search of "
                                            r"this process; close it"):
            MetaLearner(config, out_dir=tmp_path, resume=True)
        with pytest.raises(UserError, match=rf"^--out: {tmp_path} already holds a run"):
            MetaLearner(config, out_dir=tmp_path)
        assert (tmp_path / "metrics.jsonl").read_bytes() == before
    hold = ("import sys, time; from pathlib import Path; from distmeta.fileio import take_lock; "
            "lock = take_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=rf"^--out: {tmp_path} is in use by another distmeta process "
                                            rf"\(pid {holder.pid} on {socket.gethostname()}\); let it end or "
                                            r"choose another --out$"):
            MetaLearner(config, out_dir=tmp_path, resume=True)
    finally:
        holder.kill()
        holder.wait()
    with MetaLearner(config, out_dir=tmp_path, resume=True) as second:
        assert second.iteration == 2
        second.train()
    from distmeta.runtime.rundir import RunDirectory

    late = RunDirectory(tmp_path / "late")
    late.check(config, resume=False)
    MetaLearner(config, out_dir=tmp_path / "late").train()  # another run, started and ended meanwhile
    with pytest.raises(UserError, match=r"^--out: .*late changed while this run started"):
        late.open(config, 0)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("optimizer"), "optimizer is missing"),
    (lambda s: s.update(meta_params=list(s["meta_params"].values())), "meta_params is a list"),
    (lambda s: s.update(iteration="3"), "iteration is '3'; expected an integer >= 0"),
    (lambda s: s.update(iteration=-1), "iteration is -1"),
    (lambda s: s.update(config="seed: 3"), "config is a str"),
    (lambda s: s.update(torch_rng=torch.zeros(3, dtype=torch.uint8)), "torch_rng is not a random generator's"),
    (lambda s: next(iter(s["meta_params"].values())).fill_(float("nan")), "holds non-finite values"),
])
def test_a_malformed_checkpoint_is_one_line_in_eval_and_load(tmp_path, sine_config, change, message):
    MetaLearner(sine_config(iterations=2), out_dir=tmp_path).train()
    path = tmp_path / "checkpoints" / "ckpt-0000002.pt"
    state = torch.load(path, weights_only=True)
    del state["digest"]  # as a hand-made file would come
    change(state)
    torch.save(state, path)
    for load in (evaluate, MetaLearner.load):
        with pytest.raises(UserError, match=r"^checkpoint: .*ckpt-0000002.pt is malformed: ") as info:
            load(path)
        assert message in str(info.value) and "\n" not in str(info.value)
