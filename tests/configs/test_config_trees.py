"""Config refactors change no value: every shipped config's tree equals the one recorded in
``config_trees.json`` (by ``record_config_trees.py``; its commit says on which code), and every
shipped config is recorded."""
import difflib
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import record_config_trees as rec  # noqa: E402

with open(rec.PATH) as _f:
    RECORDED = json.load(_f)


def test_every_shipped_config_is_recorded():
    assert sorted(RECORDED) == rec.shipped_configs()


@pytest.mark.parametrize("path", sorted(RECORDED))
def test_config_tree_is_the_recorded_one(path):
    tree = rec.config_tree(path)
    if tree != RECORDED[path]:
        diff = "".join(list(difflib.unified_diff(RECORDED[path].splitlines(True), tree.splitlines(True),
                                                 "recorded", "now"))[:60])
        pytest.fail(f"{path}: the config tree differs from the recorded one:\n{diff}")
