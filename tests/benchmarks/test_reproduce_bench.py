"""benchmarks/reproduce.py: a row trained in parts, evaluated on its published settings."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"


def reproduce(*args):
    """The script as typed, in a process of its own."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


def reproduce_here(capsys, *args) -> tuple[int, str]:
    """The script's `main(args)` in this process (no interpreter, torch and Ray to start
    again): its exit code and stderr."""
    module = sys.modules.get("reproduce_script")
    if module is None:
        spec = importlib.util.spec_from_file_location("reproduce_script", SCRIPT)
        module = sys.modules["reproduce_script"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    try:
        code = module.main([str(a) for a in args])
    except SystemExit as exc:  # what the interpreter would print and exit with
        code = exc.code if isinstance(exc.code, int) else 1
        print(exc.code, file=sys.stderr)
    return code, capsys.readouterr().err


def test_a_row_trains_in_parts_and_scores_every_published_setting(tmp_path, omniglot_dir, capsys):
    small = ["--set", f"task.data_dir={omniglot_dir}", "--set", "model.channels=8", "--set", "task.n_way=10",
             "--eval-tasks", "4", "--root", tmp_path]
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--set", "iterations=2", *small)
    assert code == 0, stderr[-2000:]
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--set", "iterations=2", *small)
    assert code == 1 and "holds a run already; continue it with --resume" in stderr
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--set", "iterations=3", "--resume", *small)
    assert code == 0, stderr[-2000:]
    record = json.loads((tmp_path / "protonet-1shot" / "reproduce.json").read_text())
    assert [p["iterations"] for p in record["parts"]] == [[0, 2], [2, 3]]
    metrics = [json.loads(line) for line in (tmp_path / "protonet-1shot" / "metrics.jsonl").read_text().splitlines()]
    accuracy = {m["iteration"]: m["post_adaptation"]["accuracy"] for m in metrics}
    # each part's curve covers its own iterations only
    assert [p["curve"] for p in record["parts"]] == [[[1, accuracy[1]], [2, accuracy[2]]], [[3, accuracy[3]]]]
    assert [(r["setting"], r["iteration"], r["tasks"]) for r in record["results"]] == [
        ("Omniglot 5-way 1-shot", 3, 4), ("Omniglot 20-way 1-shot", 3, 4)]
    for result in record["results"]:  # k correct of 4 tasks x N ways x 15 queries
        ways = 5 if "5-way" in result["setting"] else 20
        correct = result["mean"] * 60 * ways
        assert correct == pytest.approx(round(correct), abs=1e-3)
        assert result["ci95"] > 0
    table = reproduce("--table", "--root", tmp_path).stdout
    assert "| Omniglot 20-way 1-shot | omniglot-protonet (protonet-1shot) | 96.0 | Snell et al. 2017" in table
    assert "| 3 / 3 |" in table and "not run" in table  # the other rows
    curves = reproduce("--curves", "--root", tmp_path).stdout
    assert curves == f"protonet-1shot: 1: {accuracy[1]:.3f} · 2: {accuracy[2]:.3f} · 3: {accuracy[3]:.3f}\n"
    # Evaluated again without training: the parts stay, the scores are the same tasks'.
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--eval-only", *small)
    assert code == 0, stderr[-2000:]
    again = json.loads((tmp_path / "protonet-1shot" / "reproduce.json").read_text())
    assert again["parts"] == record["parts"] and again["results"] == record["results"]
    code, stderr = reproduce_here(capsys, "maml-5w1s", "--eval-only", "--root", tmp_path)
    assert code == 1 and "error: --eval-only: " in stderr and "holds no trained part; train it first" in stderr


def test_a_regression_row_scores_the_mse(tmp_path, capsys):
    code, stderr = reproduce_here(capsys, "maml-sine-k5", "--set", "iterations=3", "--set", "num_workers=0",
                                  "--eval-tasks", "5", "--root", tmp_path)
    assert code == 0, stderr[-2000:]
    record = json.loads((tmp_path / "maml-sine-k5" / "reproduce.json").read_text())
    [result] = record["results"]
    assert (result["setting"], result["metric"], result["tasks"]) == ("Sinusoid K=5, MSE after 1 step", "loss", 5)
    assert result["mean"] > 0 and result["ci95"] > 0
    assert record["config"]["train"][:1] == ["iterations=70000"]  # the row's, before --set
    table = reproduce("--table", "--root", tmp_path).stdout
    assert f"| MSE {result['mean']:.3f} ± {result['ci95']:.3f} (5) | 3 / 3 |" in table


def test_each_setting_scores_its_papers_count_of_test_tasks(capsys):
    reproduce_here(capsys, "--table", "--root", "no-such-root")  # loads the script's module
    rows = sys.modules["reproduce_script"].ROWS
    snell, finn, ml10 = (rows[name].settings[0] for name in ("protonet-1shot", "maml-5w1s", "maml-ml10"))
    assert [s.task_count(None) for s in (snell, finn, ml10)] == [1000, 600, 250]
    # --eval-tasks overrides a count drawn from the test set, not Meta-World's whole held-out set
    assert [s.task_count(4) for s in (snell, finn, ml10)] == [4, 4, 250]
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--eval-tasks", "0")
    assert code == 2 and "error: --eval-tasks: got 0; expected at least 1" in stderr


def test_an_unknown_row_is_one_error_line():
    proc = reproduce("protonets")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: NAME: got 'protonets'; expected one of protonet-1shot, ")


@pytest.mark.slow
def test_the_meta_world_row_scores_every_held_out_task_by_success(tmp_path, capsys):
    pytest.importorskip("metaworld")
    tiny = ["iterations=1", "num_workers=0", "task.horizon=3", "meta_batch_size=2", "rl.episodes_per_task=1",
            "model.hidden_sizes=[4]"]
    code, stderr = reproduce_here(capsys, "maml-ml10", *[a for t in tiny for a in ("--set", t)], "--root", tmp_path)
    assert code == 0, stderr[-2000:]
    [result] = json.loads((tmp_path / "maml-ml10" / "reproduce.json").read_text())["results"]
    assert (result["setting"], result["metric"], result["tasks"]) == (
        "Meta-World ML10, meta-test success rate", "success", 250)
    assert 0 <= result["mean"] <= 1
    table = reproduce("--table", "--root", tmp_path).stdout
    assert f"| success {100 * result['mean']:.1f} ± {100 * (result['ci95'] or 0):.1f} % (250) | 1 / 1 |" in table


def test_against_pairs_two_runs_task_by_task(tmp_path, omniglot_dir, capsys):
    small = ["--set", f"task.data_dir={omniglot_dir}", "--set", "model.channels=8", "--set", "task.n_way=10",
             "--set", "iterations=1", "--eval-tasks", "4"]
    for seed in (0, 1):
        code, stderr = reproduce_here(capsys, "protonet-1shot", "--set", f"seed={seed}", *small,
                                      "--root", tmp_path / f"seed{seed}")
        assert code == 0, stderr[-2000:]
    records = [json.loads((tmp_path / f"seed{s}" / "protonet-1shot" / "reproduce.json").read_text())
               for s in (0, 1)]
    compared = reproduce("protonet-1shot", "--root", tmp_path / "seed1", "--against", tmp_path / "seed0",
                         "--eval-tasks", "4")
    assert compared.returncode == 0, compared.stderr[-2000:]
    rows = [line.split(" | ") for line in compared.stdout.splitlines() if line.startswith("| Omniglot")]
    assert [r[0] for r in rows] == ["| Omniglot 5-way 1-shot", "| Omniglot 20-way 1-shot"]
    for row, a, b in zip(rows, records[0]["results"], records[1]["results"], strict=True):
        # each side is its own record's score: the same tasks as reproduce.py's evaluation
        assert row[1] == f"{100 * a['mean']:.2f} ± {100 * a['ci95']:.2f} % (4) (1)"
        assert row[2] == f"{100 * b['mean']:.2f} ± {100 * b['ci95']:.2f} % (4) (1)"
        assert row[3].startswith(f"{100 * (b['mean'] - a['mean']):.2f} ± ")
        assert sum(map(int, row[4].rstrip(" |").split(" / "))) == 4
    assert compared.stdout.splitlines()[0] == (f"A = {tmp_path / 'seed0' / 'protonet-1shot'}, "
                                               f"B = {tmp_path / 'seed1' / 'protonet-1shot'}")


def test_against_refuses_a_missing_run_and_training_flags(tmp_path, capsys):
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--root", tmp_path / "b", "--against", tmp_path / "a")
    assert code == 1 and f"error: --against: {tmp_path / 'a' / 'protonet-1shot'} holds no trained part" in stderr
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--against", tmp_path / "a", "--resume")
    assert code == 2 and "error: --against: acts on a trained run; drop --resume" in stderr


@pytest.mark.slow
def test_a_kept_copy_resumes_exactly_where_the_run_would(tmp_path, omniglot_dir, capsys):
    import shutil

    import torch

    small = ["--set", f"task.data_dir={omniglot_dir}", "--set", "model.channels=8", "--set", "task.n_way=10",
             "--eval-tasks", "2"]
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--set", "iterations=2", *small, "--root", tmp_path / "a")
    assert code == 0, stderr[-2000:]
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--root", tmp_path / "a", "--keep", tmp_path / "kept")
    assert code == 0, stderr[-2000:]
    kept = tmp_path / "kept" / "protonet-1shot"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*")) == [
        "checkpoints", "checkpoints/ckpt-0000002.pt", "config.yaml", "reproduce.json"]
    shutil.copytree(kept, tmp_path / "b" / "protonet-1shot")  # the run folder is gone; its copy comes back
    for root in ("a", "b"):
        code, stderr = reproduce_here(capsys, "protonet-1shot", "--set", "iterations=3", "--resume", *small,
                                      "--root", tmp_path / root)
        assert code == 0, stderr[-2000:]
    ends = [torch.load(tmp_path / root / "protonet-1shot" / "checkpoints" / "ckpt-0000003.pt", weights_only=True)
            for root in ("a", "b")]
    assert all(torch.equal(ends[0]["meta_params"][k], ends[1]["meta_params"][k]) for k in ends[0]["meta_params"])
    records = [json.loads((tmp_path / root / "protonet-1shot" / "reproduce.json").read_text()) for root in ("a", "b")]
    assert [p["iterations"] for p in records[1]["parts"]] == [[0, 2], [2, 3]]
    # what decides whether the bits carry over to another machine, recorded per part
    assert {p["cpu_kernels"] for p in records[1]["parts"]} == {torch.backends.cpu.get_cpu_capability()}
    assert records[0]["results"] == records[1]["results"]
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--root", tmp_path / "a", "--keep", tmp_path / "kept")
    assert code == 0, stderr[-2000:]
    assert [p.name for p in (kept / "checkpoints").iterdir()] == ["ckpt-0000003.pt"]  # the older one replaced


def test_keep_refuses_a_missing_run_and_training_flags(tmp_path, capsys):
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--root", tmp_path / "a", "--keep", tmp_path / "kept")
    assert code == 1 and f"error: --keep: {tmp_path / 'a' / 'protonet-1shot'} holds no trained part" in stderr
    code, stderr = reproduce_here(capsys, "protonet-1shot", "--keep", tmp_path / "kept", "--minutes", "5")
    assert code == 2 and stderr.startswith("error: --keep: acts on a trained run; drop --minutes\n")
    assert not (tmp_path / "kept").exists()
