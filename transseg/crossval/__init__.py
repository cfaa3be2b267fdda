"""After the folds: cross-validation results, ensembles of configurations, the post-processing choice and
the instructions that deploy it. Above training and inference; imported only by the command-line fronts."""
from .ensemble import ensemble_case, ensemble_folders
from .find_best import find_best_configuration
from .postprocessing_choice import choose_postprocessing

__all__ = ["find_best_configuration", "ensemble_folders", "ensemble_case", "choose_postprocessing"]
