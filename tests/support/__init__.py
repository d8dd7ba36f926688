"""Helpers shared by test modules (import as ``from support.<module> import ...``; tests/conftest.py
puts tests/ on the import path). Each helper is written once here instead of in one test module
that others import through sys.path."""
