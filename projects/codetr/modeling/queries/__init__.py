"""Query sources: query groups, query-position modules, two-stage proposals."""
from .group import QueryGroup
from .positions import BoxSineQueryPosition

__all__ = ["BoxSineQueryPosition", "QueryGroup"]
