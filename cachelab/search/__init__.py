"""Schedule search: tune a policy's parameters against cost (MACs, latency) and quality (PSNR, SSIM, LPIPS).

    from cachelab.search import run_search

    result = run_search(model="tiny-latte", policy="fastercache", trials=40, objectives=("macs", "psnr"))
    result.pareto            # trials on the Pareto front, cheapest first
    result.yaml_paths        # their policies; cachelab.apply(pipe, result.yaml_paths[0]) reads one

Modules: :mod:`~cachelab.search.space` (search spaces declared on policy configs, YAML overrides),
:mod:`~cachelab.search.objectives` (objectives, bounds, references, measuring a trial),
:mod:`~cachelab.search.storage` (Optuna storages, trials of dead workers), :mod:`~cachelab.search.study`
(``run_search``, workers), :mod:`~cachelab.search.results` (Pareto front, YAML/PNG/CSV) and
:mod:`~cachelab.search.tracking` (Weights & Biases).
"""

from cachelab.search.errors import SearchError, SearchSpaceError, StorageError, StudyMismatchError
from cachelab.search.objectives import Objectives, parse_objectives
from cachelab.search.results import ParetoTrial, SearchResult
from cachelab.search.space import Param, SearchSpace, build_space
from cachelab.search.study import run_search

__all__ = [
    "Objectives",
    "Param",
    "ParetoTrial",
    "SearchError",
    "SearchResult",
    "SearchSpace",
    "SearchSpaceError",
    "StorageError",
    "StudyMismatchError",
    "build_space",
    "parse_objectives",
    "run_search",
]
