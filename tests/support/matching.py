"""Reference matching: the optimal assignment by enumeration, independent of scipy."""
import itertools
from typing import Callable, Sequence, Tuple, Union


def brute_force_assignment(cost: Union[Callable[[int, int], float], Sequence[Sequence[float]]], num_queries: int,
                           num_targets: int) -> Tuple[Tuple[int, ...], float]:
    """The minimum-cost injective assignment of ``num_targets`` targets to ``num_queries`` queries,
    by trying every one: ``(queries, total)`` with ``queries[g]`` the query of target g.

    ``cost``: ``cost(q, g)``, or a matrix indexed ``cost[q][g]``."""
    of = cost if callable(cost) else (lambda q, g: cost[q][g])
    totals = ((qs, sum(of(q, g) for g, q in enumerate(qs)))
              for qs in itertools.permutations(range(num_queries), num_targets))
    return min(totals, key=lambda item: item[1])
