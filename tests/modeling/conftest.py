"""Shared set-up of the model tests: every one runs on one thread (tests/conftest.py's fixture)."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
