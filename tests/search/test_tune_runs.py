"""Real Ray Tune searches through the `distmeta tune` CLI on this machine's 2 CPUs: ASHA,
PBT, Optuna and HyperOpt, an interrupted search resumed, the best config trained, and every
shipped config run small."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import (
    DISTMETA,
    Killer,
    cli,
    in_process,
    local_ray_address,
    observable_config,
    one_error_line,
    tensorboard_scalars,
)

from distmeta import MetaLearner
from distmeta.search import load_search
from distmeta.search.trial import params_sha

SINE = {"base": "sinusoid-maml", "fixed": {"num_workers": 0, "meta_batch_size": 10}}


def write_search(path: Path, **raw) -> Path:
    path.write_text(yaml.safe_dump({**SINE, **raw}))
    return path


def trial_rows(out: Path) -> dict[str, list[dict]]:
    """Every report of every trial (each trial's reports.jsonl), by trial id."""
    rows = {}
    for f in sorted(out.glob("run_trial_*/reports.jsonl")):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows


def ok(*args):
    """`distmeta ARGS` in this process (on the shared local Ray of 2 CPUs), which must succeed."""
    result = cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.tune
def test_asha_search_with_workers_in_each_trials_placement_group(ray_local, tmp_path):
    # Two trials at a time hold all 2 CPUs in their placement groups (0.5 learner + 0.5
    # worker each): a worker scheduled outside its trial's group would find no CPU and
    # the search would hang. The bad inner learning rate starts only when a slot frees,
    # after both good ones passed the first rung, so ASHA stops it there.
    search = write_search(
        tmp_path / "asha.yaml",
        fixed={"num_workers": 1, "meta_batch_size": 10},
        search_space={"algorithm.inner_lr": {"grid": [0.05, 0.01, 0.4]}},
        scheduler={"name": "asha", "grace_period": 20, "reduction_factor": 3},
        num_samples=1, max_iterations=60, report_every=10, validation={"tasks": 20},
        resources={"learner_cpu": 0.5, "worker_cpu": 0.5}, max_concurrent_trials=2,
    )
    out = tmp_path / "search"
    proc = ok("tune", search, "--out", out)
    summary = json.loads((out / "results.json").read_text())
    assert summary["metric"] == "val.post_adaptation.loss" and not summary["interrupted"]
    by_lr = {t["values"]["algorithm.inner_lr"]: t for t in summary["trials"]}
    assert (by_lr[0.4]["status"], by_lr[0.4]["iteration"]) == ("stopped", 20)
    finished = [lr for lr in (0.05, 0.01) if by_lr[lr]["status"] == "done"]
    assert finished and all(by_lr[lr]["iteration"] == 60 for lr in finished)
    assert summary["best"]["values"]["algorithm.inner_lr"] in finished
    assert "leaderboard (3 trials, val.post_adaptation.loss, min):" in proc.stderr
    for lr in (0.05, 0.01, 0.4):
        assert by_lr[lr]["trial_id"] in proc.stdout

    rows = trial_rows(out)
    tune_rows = [[json.loads(line) for line in f.read_text().splitlines()] for f in out.glob("run_trial_*/result.json")]
    spans = sorted((r[0]["timestamp"] - r[0]["time_total_s"], r[-1]["timestamp"]) for r in tune_rows)
    assert spans[1][0] < spans[0][1], "the first two trials did not run at the same time"
    for row in rows.values():
        assert {"val/post_adaptation/loss", "post_adaptation/loss", "params_sha"} <= set(row[0])
    best_dir = Path(summary["best"]["path"])
    scalars = tensorboard_scalars(best_dir)
    assert len(scalars["ray/tune/val/post_adaptation/loss"]) == 6

    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["algorithm"]["inner_lr"] == summary["best"]["values"]["algorithm.inner_lr"]
    assert best["iterations"] == 60 and best["num_workers"] == 1
    trained = ok("train", out / "best_config.yaml", "--set", "iterations=20", "--set", "num_workers=0",
                 "--out", tmp_path / "retrain")
    assert "done: 20 iterations" in trained.stdout
    scored = json.loads(ok("eval", out / "best_checkpoint.pt", "--tasks", "20", "--json").stdout)
    assert scored["iteration"] == 60


@pytest.mark.tune
def test_a_diverged_trial_ends_with_one_line_and_the_search_goes_on(ray_local, tmp_path):
    search = write_search(tmp_path / "div.yaml", search_space={"algorithm.inner_lr": {"grid": [0.01, 1e30]}},
                          num_samples=1, max_iterations=4, report_every=2, resources={"learner_cpu": 1})
    out = tmp_path / "search"
    proc = ok("tune", search, "--out", out)
    by_lr = {t["values"]["algorithm.inner_lr"]: t for t in json.loads((out / "results.json").read_text())["trials"]}
    assert by_lr[0.01]["status"] == "done" and by_lr[1e30]["status"] == "diverged"
    assert by_lr[1e30]["error"].startswith("meta-gradient: not finite at iteration 1")
    assert f"error: {by_lr[1e30]['error']}" in proc.stdout  # under the trial in the table
    # Not a traceback but the trial's warning line (which Ray forwards when it gets to it).
    # Tune removes a finished trial's placement group before its process has exited, so
    # Ray's raylet ends the process with SIGTERM; should Ray's handler raise its SystemExit
    # inside a weakref callback, Python prints that as an ignored exception: the only
    # traceback allowed here.
    assert "DivergedError" not in proc.stderr
    assert proc.stderr.count("Traceback") == proc.stderr.count("in sigterm_handler"), proc.stderr


@pytest.mark.tune
def test_pbt_exploit_restores_another_trials_learner_state(ray_local, tmp_path):
    search = write_search(
        tmp_path / "pbt.yaml",
        search_space={"algorithm.inner_lr": {"loguniform": [0.001, 0.3]},
                      "algorithm.outer_lr": {"loguniform": [0.0001, 0.01]}},
        scheduler={"name": "pbt", "perturbation_interval": 20, "quantile_fraction": 0.5, "synch": True},
        num_samples=2, max_iterations=30, report_every=10, resources={"learner_cpu": 1},
    )
    out = tmp_path / "search"
    ok("tune", search, "--out", out)
    summary = json.loads((out / "results.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["done", "done"], summary["trials"]
    rows = trial_rows(out)
    sha_at = {(tid, r["iteration"]): r["params_sha"] for tid, trial in rows.items() for r in trial}
    exploits = [(tid, r) for tid, trial in rows.items() for r in trial
                if r.get("restored_from") and not r["restored_from"].startswith(tid + "@")]
    assert exploits, "neither trial exploited the other in 30 iterations"
    for tid, r in exploits:
        donor, _, at = r["restored_from"].partition("@")
        # The learner continued from the donor's parameters at its checkpoint ...
        assert r["restored_params_sha"] == sha_at[(donor, int(at))]
        assert r["iteration"] == int(at) + 10
        # ... with this trial's perturbed hyperparameters.
        assert r["outer_lr"] == pytest.approx(r["config"]["algorithm.outer_lr"])
        donor_lr = next(d["config"]["algorithm.outer_lr"] for d in rows[donor] if d["iteration"] == int(at))
        assert r["outer_lr"] != pytest.approx(donor_lr)
    # results.json gives each trial the values it ended with, not its donor's.
    for trial in summary["trials"]:
        assert trial["values"] == rows[trial["trial_id"]][-1]["config"], trial


@pytest.mark.tune
def test_interrupted_search_resumes_and_ends_where_an_uninterrupted_run_ends(ray_local, tmp_path):
    """Ctrl-C needs a process of its own: the search runs as the console script (joined to
    this process's Ray), and the resume in this process."""
    search = write_search(
        tmp_path / "long.yaml",
        search_space={"algorithm.inner_lr": {"grid": [0.05]}},
        num_samples=1, max_iterations=100, report_every=20, resources={"learner_cpu": 1},
    )
    out = tmp_path / "search"
    address = local_ray_address()
    proc = subprocess.Popen([DISTMETA, "tune", str(search), "--out", str(out), "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(len(r) >= 2 for r in trial_rows(out).values()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    assert f"interrupted; continue with: distmeta tune {search} --address {address} --out {out} --resume" in stderr
    first = json.loads((out / "results.json").read_text())
    assert first["interrupted"] and any(t["status"] == "unfinished" for t in first["trials"])

    # Tune's restore unpickles the folder: one distmeta did not write is refused first.
    import shutil

    from distmeta.search.trust import RECORD

    crafted = tmp_path / "crafted"
    shutil.copytree(out, crafted)
    with open(crafted / "tuner.pkl", "ab") as f:
        f.write(b"\x00")
    assert bad_input(search, "--out", crafted, "--resume") == (
        f"error: --resume: {crafted / 'tuner.pkl'} differs from distmeta's record of this search; Tune's restore "
        "unpickles it, so distmeta resumes only a search folder it wrote; start the search again")
    (crafted / RECORD).unlink()
    assert bad_input(search, "--out", crafted, "--resume").startswith(
        f"error: --resume: {crafted} has no readable {RECORD} (distmeta's record of the search's state)")

    ok("tune", search, "--out", out, "--resume")
    summary = json.loads((out / "results.json").read_text())
    assert not summary["interrupted"] and [t["status"] for t in summary["trials"]] == ["done"]
    rows = trial_rows(out)
    assert any(r.get("restored_from", "").startswith(tid + "@") for tid, trial in rows.items() for r in trial)
    spec = load_search(str(search))
    for tid, trial in rows.items():
        config = spec.train_config({"algorithm.inner_lr": trial[-1]["config"]["algorithm.inner_lr"]})
        with MetaLearner(config) as learner:
            learner.train()
            assert trial[-1]["params_sha"] == params_sha(learner), tid


@pytest.mark.tune
def test_a_trial_whose_worker_is_killed_finishes_with_a_fault_free_trials_parameters(ray_local, tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    base = observable_config(iterations=10).to_dict()
    base["task"].update(delay_s=0.3, marker_dir=str(markers))
    search = tmp_path / "killed.yaml"
    search.write_text(yaml.safe_dump({
        "base": base, "search_space": {"algorithm.inner_lr": {"grid": [0.02]}},
        "num_samples": 1, "report_every": 5, "resources": {"learner_cpu": 0.5, "worker_cpu": 0.5},
    }))
    out = tmp_path / "search"
    killer = Killer(markers, kills=1, every=6)  # a worker of the trial, in iteration 3
    killer.start()
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the trial imports faulty_family from here
    proc = cli("tune", search, "--out", out)
    killer.done.set()
    assert proc.returncode == 0, proc.stderr
    assert len(killer.killed) == 1
    summary = json.loads((out / "results.json").read_text())
    assert [(t["status"], t["iteration"]) for t in summary["trials"]] == [("done", 10)]
    (trial,) = trial_rows(out).values()
    # The same config without the fault, in this process on the trial's shards.
    with MetaLearner(in_process(observable_config(iterations=10))) as learner:
        learner.train()
        assert trial[-1]["params_sha"] == params_sha(learner)


SMALL = {
    "sinusoid_maml_asha": ["fixed.num_workers=0", "validation.tasks=5", "scheduler.grace_period=2", "num_samples=2"],
    "omniglot_protonet_optuna": ["fixed.num_workers=0", "validation.tasks=2", "scheduler.grace_period=2",
                                 "search_space.model.channels={choice: [8]}", "num_samples=2"],
    "nav2d_maml_pbt": ["fixed.num_workers=0", "fixed.meta_batch_size=2", "fixed.rl.episodes_per_task=2",
                       "fixed.task.horizon=10", "scheduler.perturbation_interval=2", "num_samples=1"],
    "halfcheetah_vel_maml": ["fixed.num_workers=0", "fixed.meta_batch_size=2", "fixed.rl.episodes_per_task=1",
                             "fixed.task.horizon=10", "scheduler.grace_period=2", "fixed.model.hidden_sizes=[8]",
                             "num_samples=2"],
}
# Two trials show that a searcher draws two different points; nav2d's searcher (random) is
# sinusoid's, so one trial runs its PBT on Nav2D.


@pytest.mark.tune
@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_shipped_config_runs_small(ray_local, tmp_path, name, omniglot_dir):
    """Each shipped search, small, with its own searcher (random, Optuna, HyperOpt) and
    scheduler (ASHA, PBT): trials that finish, with values the searcher drew inside the
    searched ranges, two different points where two trials ran, and a best config that
    trains."""
    extra = [f"fixed.task.data_dir={omniglot_dir}"] if "omniglot" in name else []
    sets = [*SMALL[name], *extra, "max_iterations=4", "report_every=2"]
    samples = int(next(s for s in sets if s.startswith("num_samples=")).partition("=")[2])
    out = tmp_path / "search"
    ok("tune", name, *[f"--set={s}" for s in sets], "--out", out)
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["trials"]) == samples and summary["best"] is not None
    assert all(t["status"] in ("done", "stopped") for t in summary["trials"])
    space = load_search(name, sets).space
    for trial in summary["trials"]:
        for key, dist in space.items():
            value = trial["values"][key]
            if dist.kind in ("choice", "grid"):
                assert value in dist.values, (key, value)
            else:
                low, high = dist.values
                assert low <= value <= high and (dist.kind != "randint" or value < high), (key, value)
    continuous = [k for k, d in space.items() if d.kind in ("uniform", "loguniform")]
    assert len({tuple(t["values"][k] for k in continuous) for t in summary["trials"]}) == samples
    ok("train", out / "best_config.yaml", "--set", "iterations=1", "--out", tmp_path / "retrain")


def bad_input(*args) -> str:
    """The one error line of `distmeta tune ARGS` (in-process), which must exit 2."""
    result = cli("tune", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    return one_error_line(result)


def test_bad_input_exits_2_before_ray(tmp_path):
    search = write_search(tmp_path / "s.yaml", search_space={"algorithm.inner_lr": {"choice": [0.01]}},
                          max_iterations=10, resources={"learner_cpu": 1})
    out = tmp_path / "never"
    line = bad_input(search, "--set", "search_space.algorithm.inner_lrr={uniform: [0.1, 0.01]}", "--out", out)
    assert "search_space.algorithm.inner_lrr" in line
    line = bad_input(search, "--set", "searcher=bayes", "--out", out)
    assert line.startswith("error: searcher: got 'bayes'")
    line = bad_input(search, "--set", "resources.learner_cpu=10000", "--set", "fixed.num_workers=2", "--out", out)
    # "this machine has N" before Ray starts; "the Ray cluster has N" where this process has one up
    assert "resources: a trial needs 10002 CPUs (learner_cpu 10000 + 2 workers x 1); th" in line
    line = bad_input(search, "--out", out, "--resume")
    assert "--resume: no search to continue" in line
    assert not out.exists()
    line = bad_input(search, "--resume")
    assert "--resume: name the search directory" in line


@pytest.mark.ray
def test_too_many_gpus_is_one_error_once_ray_is_up(ray_local, tmp_path):
    """Known only once Ray is up (the cluster's GPUs), still before any trial or file."""
    search = write_search(tmp_path / "s.yaml", search_space={"algorithm.inner_lr": {"choice": [0.01]}},
                          max_iterations=10, resources={"learner_cpu": 1})
    out = tmp_path / "never"
    line = bad_input(search, "--set", "resources.worker_gpu=1000", "--set", "fixed.num_workers=1",
                     "--set", "resources.learner_cpu=0.5", "--set", "resources.worker_cpu=0.5", "--out", out)
    assert line.startswith("error: resources.worker_gpu: a trial's 1 workers x 1000 GPU need 1000 GPUs; "
                           "the Ray cluster has 0")
    assert not out.exists()
