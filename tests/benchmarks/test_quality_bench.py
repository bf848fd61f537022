"""benchmarks/quality.py: bad input is refused before the training budget is spent."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("args", "message"), [
    (["--split", "val"], "error: --split: got 'val'; task.trainval trains on the val characters"),
    (["--split", "dev"], "error: --split: got 'dev'; expected one of train, val, test"),
    (["--eval-set", "task.trainval=false"], "error: --eval-set: got 'task.trainval=false'; evaluation may"),
    (["--eval-set", "model.channels=8"], "error: --eval-set: got 'model.channels=8'; evaluation may"),
])
def test_bad_evaluation_input_is_refused_before_training(quality, omniglot_dir, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = quality.main(["omniglot-protonet", "--set", f"task.data_dir={omniglot_dir}", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists()
