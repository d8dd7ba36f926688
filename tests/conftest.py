"""Test-suite set-up: make the in-tree package importable even without `pip install -e .`, put
tests/ on the path for the shared helpers (``tests/support``), and the fixtures shared by test
directories."""
import os
import sys

import pytest
import torch

_TESTS = os.path.dirname(os.path.abspath(__file__))
_PROJECTS = os.path.join(os.path.dirname(_TESTS), "projects")
for _path in (_PROJECTS, _TESTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, especially on a busy machine (torch's thread count
    restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
