"""Bad, careless and hostile input as the command line receives it: each is one `error:`
line (exit 2 for bad input, 1 for a run that could not go on) within a time bound, nothing
half-written left behind. RELIABILITY.md ("Hostile and careless input") lists what is here."""

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers import DISTMETA, cli, one_error_line

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))

# (file name, its bytes or text, the start of the error line after "error: ")
FILES = [
    ("bomb.yaml", LAUGHS, "config: cannot read YAML from {f}: an alias (*a); write the value out"),
    ("binary.yaml", bytes(range(256)) * 4, "config: cannot read YAML from {f}: "),
    ("nested.yaml", "seed: " + "[" * 100000 + "]" * 100000 + "\n", "config: cannot read YAML from {f}: nested too deeply"),
    ("twice.yaml", "seed: 1\niterations: 3\nseed: 2\n", "config: cannot read YAML from {f}: key 'seed' given twice (line 3)"),
    ("deep-twice.yaml", "task:\n  family: sinusoid\n  family: sinusoid\n",
     "config: cannot read YAML from {f}: key 'family' given twice (line 3)"),
    ("empty.yaml", "", "config: {f} holds no keys (empty, or comments only)"),
    ("comments.yaml", "# seed: 3\n\n# iterations: 10\n", "config: {f} holds no keys (empty, or comments only)"),
    ("list.yaml", "- 1\n- 2\n", "config: {f} holds a list; expected a mapping"),
    ("huge.yaml", "seed: 1\n" + "#" * 1_100_000 + "\n", "config: cannot read YAML from {f}: 1100009 bytes"),
]


@pytest.mark.parametrize("name, content, message", FILES, ids=[f[0] for f in FILES])
def test_a_hostile_or_careless_config_file_is_one_line_at_once(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.monotonic()
    result = cli("train", path, "--out", tmp_path / "run")
    assert time.monotonic() - start < 30
    assert result.returncode == 2
    assert one_error_line(result).startswith("error: " + message.format(f=path))
    assert not (tmp_path / "run").exists()  # nothing written


ARGS = [
    (["train", "sinusoid-maml", "--set", "task={n_way: 2, n_way: 3}"], "--set task: key 'n_way' given twice"),
    (["train", "sinusoid-maml", "--set", "model.hidden_sizes=&a [1, *a]"], "--set model.hidden_sizes: an alias (*a)"),
    (["train", "sinusoid-maml", "--set", "seed=" + "9" * 20000], "--set seed: a value of 20000 characters"),
    (["train", "sinusoid-maml", "--set", "seed=123456789012345678901234567890"],
     "seed: got an integer of 30 digits; expected one below 2**63"),
    (["train", "sinusoid-maml", "--set", "a\nb=1"], "unknown key 'a\\nb'; expected one of: seed, "),
    (["train", "sinusoid-maml", "--set", "x" * 5000 + "=1"], "unknown key 'xxxx"),
    (["train", "sinusoid-maml", "--out", ""], "--out: got an empty path"),
    (["train", ""], "config: got an empty path"),
    (["train", "sinusoid-maml", "--set", "model.hidden_sizes=[1000000,1000000]", "--set", "num_workers=0"],
     "model: cannot be built here ("),
    (["train", "sinusoid-maml", "--address", "127.0.0.1:1"], "--address: cannot reach a Ray cluster at 127.0.0.1:1"),
    (["tune", "sinusoid_maml_asha", "--out", ""], "--out: got an empty path"),
    # Sizes past any machine's memory: refused from the config before a task is drawn, and from
    # the first drawn tasks (the preset's 2 workers never start).
    (["train", "sinusoid-maml", "--set", "task.k_support=1000000000000"], "task: one task holds 7.28 TiB of data (estimated)"),
    (["train", "sinusoid-maml", "--set", "meta_batch_size=100000000000"],
     "meta_batch_size: a shard of 50000000000 tasks holds 7.28 TiB of task data (160 B a task, estimated)"),
    # Before Ray starts (the preset has 2 workers): it used to come after the workers were up.
    (["train", "sinusoid-maml", "--out", "/dev/null/run"], "--out: /dev/null is not a folder; cannot make"),
    (["tune", "sinusoid_maml_asha", "--out", "/dev/null/search"], "--out: /dev/null is not a folder; cannot make"),
]


@pytest.mark.parametrize("args, message", ARGS, ids=[str(i) for i in range(len(ARGS))])
def test_a_hostile_or_careless_argument_is_one_line_at_once(args, message):
    start = time.monotonic()
    result = cli(*args)
    assert time.monotonic() - start < 30
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: " + message) and len(line) < 2100, line[:300]


def test_bounds_on_evaluation_and_adaptation_and_json_stays_json_when_scores_are_not_finite(tmp_path):
    run = tmp_path / "run"
    assert cli("train", "sinusoid-maml", "--set", "num_workers=0", "--set", "iterations=2", "--out", run).returncode == 0
    for args, message in ((["eval", run, "--steps", "1000000000"], "--steps: got 1000000000; expected at most 10000"),
                          (["eval", run, "--tasks", "10000000000"], "--tasks: got 10000000000; expected at most 1000000"),
                          (["eval", run, "--tasks", "0"], "--tasks: got 0; expected >= 1")):
        result = cli(*args)
        assert result.returncode == 2 and one_error_line(result) == "error: " + message
    # An inner rate that sends the adapted parameters to infinity: scores NaN or inf.
    result = cli("eval", run, "--tasks", "3", "--set", "algorithm.inner_lr=1e30", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)  # strict JSON: NaN is not JSON
    assert scores["non_finite"] is True and scores["post_adaptation"]["loss"]["mean"] is None
    healthy = json.loads(cli("eval", run, "--tasks", "3", "--json").stdout)
    assert "non_finite" not in healthy and healthy["post_adaptation"]["loss"]["mean"] > 0


def test_every_file_of_a_run_has_the_mode_the_umask_gives(tmp_path):
    """config.yaml and checkpoints (written whole through a temporary file) and
    metrics.jsonl (appended) alike: 0640 under umask 027."""
    run = tmp_path / "run"
    subprocess.run([DISTMETA, "train", "sinusoid-maml", "--set", "num_workers=0", "--set", "iterations=4",
                    "--set", "checkpoint_every=2", "--out", str(run)],
                   check=True, capture_output=True, preexec_fn=lambda: os.umask(0o027))
    files = [p for p in run.rglob("*") if p.is_file() and p.name != ".lock"]
    assert {"config.yaml", "metrics.jsonl"} <= {p.name for p in files} and any(p.suffix == ".pt" for p in files)
    modes = {p.relative_to(run).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o640"}, modes


@pytest.fixture()
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk. Mounting needs root (as on this project's machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_stops_the_run_in_one_line_and_its_checkpoints_resume(small_disk, tmp_path):
    import shutil

    run = small_disk / "run"
    result = cli("train", "sinusoid-maml", "--set", "num_workers=0", "--set", "iterations=100000",
                 "--set", "checkpoint_every=20", "--out", run)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()  # the progress's first line, then the error
    assert lines[0].startswith("run directory: ") and len(lines) == 2 and "Traceback" not in result.stderr
    line = lines[1]
    assert line.startswith(f"error: {run}") and "no space left on device; files written before are intact" in line
    assert line.endswith(f"free space, then continue with --resume --out {run}")
    assert not list(run.rglob(".*.tmp"))  # no temporary file left behind
    copy = tmp_path / "freed"
    shutil.copytree(run, copy)
    (copy / ".lock").unlink(missing_ok=True)
    newest = max(int(p.stem.split("-")[-1]) for p in (copy / "checkpoints").glob("*.pt"))
    resumed = cli("train", "sinusoid-maml", "--set", "num_workers=0", "--set", f"iterations={newest + 2}",
                  "--set", "checkpoint_every=20", "--out", copy, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(x) for x in Path(copy / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, newest + 3))


def test_a_search_folder_in_use_is_refused_before_ray_starts(tmp_path):
    """Two searches on one --out would mix their trials' state: the second is one line naming
    the holder; nothing is written."""
    import socket
    import sys

    folder = tmp_path / "search"
    folder.mkdir()
    hold = ("import sys, time; from pathlib import Path; from distmeta.fileio import take_lock; "
            "lock = take_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        result = cli("tune", "sinusoid_maml_asha", "--out", folder)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert one_error_line(result) == (f"error: --out: {folder} is in use by another distmeta process (pid "
                                      f"{holder.pid} on {socket.gethostname()}); let it end or choose another --out")
    assert [p.name for p in folder.iterdir()] == [".lock"]
