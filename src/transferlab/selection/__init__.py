"""Choose the model for the user: compare backbones and tune the head on cached features.

    from transferlab.selection import compare, tune
    board = compare("photos/", backbones="available")      # leaderboard, test scored once
    board.winner, board.test["accuracy"], board.winner_config
    search = tune("photos/", trials=100)                    # Optuna over the head's settings
    search.best_config                                      # a TrainConfig for transferlab.train

Once a backbone's features are cached a head trains in well under a second, so the search
runs on features: stratified k-fold cross-validation over the train and validation images,
every fold's head trained at once (:mod:`transferlab.selection.heads`). The test split is read
only after the choice, to score the winner once.
"""

from __future__ import annotations

from transferlab._lazy import lazy_attributes

_LAZY = {
    "compare": "transferlab.selection.compare:compare",
    "Leaderboard": "transferlab.selection.compare:Leaderboard",
    "tune": "transferlab.selection.tune:tune",
    "TuneResult": "transferlab.selection.tune:TuneResult",
    "HeadSettings": "transferlab.selection.heads:HeadSettings",
    "cross_validate": "transferlab.selection.heads:cross_validate",
    "make_folds": "transferlab.selection.folds:make_folds",
    "SelectionError": "transferlab.selection.errors:SelectionError",
    "MissingExtraError": "transferlab.selection.errors:MissingExtraError",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
