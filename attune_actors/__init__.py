"""attune_actors: Attune-style YAML workflows executed as actors on asyncio."""

from attune_actors.engine.engine import Engine, WorkflowInfo
from attune_actors.engine.execution import Execution, TaskRunInfo
from attune_actors.errors import (
    ActionError,
    AttuneError,
    ConfigError,
    ConflictError,
    InquiryResponseError,
    NotFoundError,
    ParameterError,
    StoreError,
    TemplateError,
    TransportError,
    ValidationError,
)
from attune_actors.statuses import Status

__all__ = [
    "ActionError",
    "AttuneError",
    "ConfigError",
    "ConflictError",
    "Engine",
    "Execution",
    "InquiryResponseError",
    "NotFoundError",
    "ParameterError",
    "Status",
    "StoreError",
    "TaskRunInfo",
    "TemplateError",
    "TransportError",
    "ValidationError",
    "WorkflowInfo",
]
__version__ = "0.1.0"
