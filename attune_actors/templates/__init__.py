"""Workflow templates: Jinja2 in a sandbox, native values, Tera extras (SPEC sections 4 and 7).

Example::

    from attune_actors.templates import Renderer, build_context, run_functions
    renderer = Renderer()
    ctx = build_context(parameters={"app_name": "shop"}, vars={"n": 3})
    renderer.render("{{ parameters.app_name | upper }}", ctx)   # -> "SHOP"
    renderer.render("{{ vars.n }}", ctx)                        # -> 3 (native value)
    renderer.truthy("{{ vars.n > 2 ? true : false }}", ctx)     # -> True
"""

from attune_actors.templates.filters import (
    MAX_INT_BITS,
    MAX_RANGE,
    MAX_SIZE,
    MAX_WIDTH,
    ResourceLimitError,
)
from attune_actors.templates.renderer import Renderer, is_template
from attune_actors.templates.sandbox import RenderContext, TemplateEnvironment
from attune_actors.templates.scope import (
    FAILED_STATUSES,
    LAST_RUN,
    LAST_RUN_FUNCTIONS,
    NOT_RUN,
    KeyValueStore,
    KVView,
    Scope,
    TaskViews,
    build_context,
    run_functions,
)
from attune_actors.templates.ternary import rewrite_ternary

__all__ = [
    "FAILED_STATUSES",
    "LAST_RUN",
    "LAST_RUN_FUNCTIONS",
    "MAX_INT_BITS",
    "MAX_RANGE",
    "MAX_SIZE",
    "MAX_WIDTH",
    "NOT_RUN",
    "KVView",
    "KeyValueStore",
    "RenderContext",
    "Renderer",
    "ResourceLimitError",
    "Scope",
    "TaskViews",
    "TemplateEnvironment",
    "build_context",
    "is_template",
    "rewrite_ternary",
    "run_functions",
]
