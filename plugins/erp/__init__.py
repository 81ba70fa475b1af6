"""Experiment analyses run as jobs, and the first of them: the ERP
neuro-marketing analysis with the predecessor's ``/neuro-marketing`` API.

The plugin runs every analysis contributed through the hook
``eeghub_experiment_analyses`` (its own included): a queue consumer
(``experiment_analysis_queue``) runs them in worker threads, the routes
start them, report progress and serve results and figures.
"""

from __future__ import annotations

from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.experiment_analysis import ExperimentAnalysisResult, ExperimentData
from eeghub.core.extension import Consumer
from eeghub.core.hookspecs import hookimpl

from . import render, routes, runner
from .analysis import ErpParameters
from .pipeline import run_erp


class ErpAnalysis:
    """The built-in experiment analysis ``erp`` (``analysis.py`` says how it works)."""

    id = "erp"
    display_name = "ERP neuro-marketing"
    description = (
        "Per participant, a P300 detector trained on calibration (shrinkage LDA, cross-validated AUC against "
        "permutations) scores each product's trials; products reliably above the non-target level and the other products are recommended."
    )
    figures = render.FIGURES

    def __init__(self, ctx: AppContext | None = None) -> None:
        self._ctx = ctx

    def parameters(self, table: dict[str, Any]) -> ErpParameters:
        base: dict[str, Any] = {}
        if self._ctx is not None:
            cfg = self._ctx.settings.neuro_marketing
            base = {"permutations": cfg.permutations, "alpha": cfg.alpha}
        return ErpParameters.from_settings({**base, **table})

    def language(self) -> str:
        return self._ctx.settings.neuro_marketing.summary_language if self._ctx is not None else "en"

    def run(self, data: ExperimentData) -> ExperimentAnalysisResult:
        return run_erp(data, self.parameters(data.settings), self.language())

    def render(self, result: dict[str, Any], name: str) -> bytes:
        return render.render(result, name)


@hookimpl
def eeghub_experiment_analyses(ctx: AppContext) -> list[Any]:
    return [ErpAnalysis(ctx)]


@hookimpl
def eeghub_startup(ctx: AppContext) -> None:
    """A bad ``[plugin.erp]`` table stops start-up, naming the key."""
    try:
        ErpAnalysis(ctx).parameters(dict(ctx.settings.plugin.get("erp", {})))
    except ValueError as exc:
        from eeghub.core.errors import ConfigurationError

        raise ConfigurationError(str(exc)) from None


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return list(routes.ROUTES)


@hookimpl
def eeghub_consumers(ctx: AppContext) -> list[Consumer]:
    return [
        Consumer(
            queue=ctx.settings.broker.queues.experiment_analysis_queue,
            handler=runner.make_handler(ctx),
            prefetch=ctx.settings.neuro_marketing.max_concurrent_analyses,
            max_attempts=3,
        )
    ]
