"""Test-suite set-up: make the in-tree package importable even without `pip install -e .`."""
import os
import sys

_PROJECTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects")
if _PROJECTS not in sys.path:
    sys.path.insert(0, _PROJECTS)
