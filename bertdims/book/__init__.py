"""The book: running chapters and building it (``chapters``, ``parameters``, ``plan``), the
claims and the scorecard (``claims``, ``scorecard``), how verdicts are shown (``report``),
findings in words (``findings``, ``study_findings``), charts (``charts``, ``fewdims_charts``,
``study_charts``, ``overview``) and the offline web assets (``webassets``). Presentation: a
change here touches no module that computes."""
from . import (chapters, parameters, plan, claims, scorecard, report, findings,  # noqa: F401
               study_findings, charts, fewdims_charts, study_charts, overview, webassets)
