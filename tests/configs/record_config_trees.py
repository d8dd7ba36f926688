"""Record every shipped config's resolved tree (``OmegaConf.to_yaml(LazyConfig.load(path),
resolve=True)``: interpolations replaced by their values) into ``config_trees.json``, read by
``test_config_trees.py``: a config refactor (a parent import instead of a copy, a value written
once and interpolated elsewhere) must leave every resolved tree as it was.

Run from the repository root on the code whose configs are the reference:
    PYTHONPATH=$PWD/projects python tests/configs/record_config_trees.py

Re-record (in a commit that says why) when a change of a config's values is intended.
"""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PATH = os.path.join(HERE, "config_trees.json")


def shipped_configs():
    """Every config under configs/ except the model fragments (configs/*/models/) and packages."""
    paths = glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(p, ROOT) for p in paths
                  if f"{os.sep}models{os.sep}" not in p and not p.endswith("__init__.py"))


def config_tree(path: str) -> str:
    """The resolved tree; a fragment whose interpolations point outside it (e.g.
    configs/common/schedule.py's ``${train.max_iter}``) as written."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    cfg = LazyConfig.load(os.path.join(ROOT, path))
    try:
        return OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    except InterpolationResolutionError:
        return "# unresolved (a fragment)\n" + OmegaConf.to_yaml(cfg, resolve=False, sort_keys=True)


def main() -> None:
    sys.path.insert(0, os.path.join(ROOT, "projects"))
    trees = {p: config_tree(p) for p in shipped_configs()}
    with open(PATH, "w") as f:
        json.dump(trees, f, indent=0, sort_keys=True)
    print(f"recorded {len(trees)} configs into {PATH}")


if __name__ == "__main__":
    main()
