"""tools/ap_curve.py on a hand-written metrics.json."""
import importlib.util
import json
import os

import pytest

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools", "ap_curve.py")


def _tool():
    spec = importlib.util.spec_from_file_location("ap_curve", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(tmp_path):
    records = [{"iteration": i, "total_loss": 10.0 - i, "loss_giou": float(i)} for i in range(0, 20, 2)]
    records.insert(5, {"iteration": 9, "bbox/AP": 1.5, "bbox/AP50": 3.0})  # after 10 iterations
    records.append({"iteration": 19, "bbox/AP": 2.5, "bbox/AP50": 5.0})  # the final evaluation
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(tmp_path)


def test_points_and_loss_window_means(tmp_path):
    tool, run = _tool(), _run_dir(tmp_path)
    assert tool.ap_points(run) == [(10, 1.5, 3.0), (19, 2.5, 5.0)]
    # logged loss_giou at iterations 0, 2, ..., 18 equals the iteration
    assert tool.loss_means(run, "loss_giou", 6, [10, 19]) == {10: (4 + 6 + 8) / 3, 19: (14 + 16 + 18) / 3}
    with pytest.raises(SystemExit, match="no 'loss_bbox' logged"):
        tool.loss_means(run, "loss_bbox", 6, [10])


def test_table_has_the_loss_column(tmp_path, capsys, monkeypatch):
    tool, run = _tool(), _run_dir(tmp_path)
    monkeypatch.setattr("sys.argv", ["ap_curve.py", "--loss", "loss_giou", "--window", "4", run])
    tool.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].count("|") == 5 and "loss_giou" in lines[0]
    assert lines[2] == "| 10 | 1.5 | 3.0 | 7.000 |"
    assert lines[3] == "| 19 | 2.5 | 5.0 | 17.000 |"
