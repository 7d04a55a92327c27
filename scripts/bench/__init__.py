"""`python -m scripts bench`: capacity under an SLO, and its cost, for several overlays.

Modules: ``results`` (the data every other module shares), ``search`` (the open-loop
capacity search), ``steps`` (one measured rate), ``slots`` (overlays deployed under
their own names), ``throttling`` (CFS counters), ``prices``/``cost`` (the cost model),
``report`` (table, summary, charts, JSON, compare).
"""
