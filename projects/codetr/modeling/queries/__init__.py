"""Query sources: query groups, query-position modules, two-stage proposals."""
from .group import QueryGroup
from .learned import LearnedAnchorQueries, LearnedPointQueries
from .positions import BoxSineQueryPosition

__all__ = ["BoxSineQueryPosition", "LearnedAnchorQueries", "LearnedPointQueries", "QueryGroup"]
