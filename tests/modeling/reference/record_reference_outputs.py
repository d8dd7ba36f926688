"""Record the reference outputs of ``reference_models.py`` (every family's training losses and
detections) into ``query_detector_outputs.pt``, read by ``tests/modeling/test_reference_outputs.py``.

Run from the repository root, on the code whose behaviour is the reference:
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/projects python tests/modeling/reference/record_reference_outputs.py [FAMILY ...]

With family names, only those are recorded (added to or replaced in the file; the other families'
recorded values are kept as they are): families added later are recorded on the code of their
commit without re-recording the older ones on newer code.

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


PATH = os.path.join(HERE, "query_detector_outputs.pt")


def main(names=()) -> None:
    torch.set_num_threads(1)
    unknown = sorted(set(names) - set(rm.FAMILIES))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; expected some of {sorted(rm.FAMILIES)}")
    if not rm.level_masks_agree():
        raise SystemExit("the batch's nearest-neighbour level masks differ from the convolution-consistent ones")
    outputs = torch.load(PATH, weights_only=True) if names else {}
    for name in names or rm.FAMILIES:
        first, second = rm.run_family(name), rm.run_family(name)
        if not _equal(first, second):
            raise SystemExit(f"{name}: two runs differ; the fixture is not deterministic")
        outputs[name] = first
        print(name, {k: (len(v) if isinstance(v, (dict, list)) else v.tolist()) for k, v in first.items()})
    torch.save(outputs, PATH)
    print("saved", PATH)


if __name__ == "__main__":
    main(sys.argv[1:])
