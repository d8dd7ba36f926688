"""Record the reference outputs of ``reference_models.py`` (every family's training losses and
detections) into ``query_detector_outputs.pt``, read by ``tests/modeling/test_reference_outputs.py``.

Run from the repository root, on the code whose behaviour is the reference:
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/projects python tests/modeling/reference/record_reference_outputs.py

Each family runs twice and must give bit-identical values (else the fixture is not deterministic).
The file holds only tensors, dicts and lists (``torch.load(..., weights_only=True)`` reads it).
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import reference_models as rm  # noqa: E402


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


def main(path: str = os.path.join(HERE, "query_detector_outputs.pt")) -> None:
    torch.set_num_threads(1)
    if not rm.level_masks_agree():
        raise SystemExit("the batch's nearest-neighbour level masks differ from the convolution-consistent ones")
    outputs = {}
    for name in rm.FAMILIES:
        first, second = rm.run_family(name), rm.run_family(name)
        if not _equal(first, second):
            raise SystemExit(f"{name}: two runs differ; the fixture is not deterministic")
        outputs[name] = first
        print(name, {k: (len(v) if isinstance(v, (dict, list)) else v.tolist()) for k, v in first.items()})
    torch.save(outputs, path)
    print("saved", path)


if __name__ == "__main__":
    main(*sys.argv[1:])
