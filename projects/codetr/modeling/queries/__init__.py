"""Query sources: query groups, query-position modules, two-stage proposals."""
from .group import QueryGroup
from .learned import LearnedAnchorQueries, LearnedPointQueries, LearnedPositionQueries
from .positions import BoxSineQueryPosition

__all__ = [
    "BoxSineQueryPosition", "LearnedAnchorQueries", "LearnedPointQueries", "LearnedPositionQueries", "QueryGroup",
]
