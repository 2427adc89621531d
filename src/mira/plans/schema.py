"""JSON Schemas of generate_plan's and publish_plan's `data`, with the bounds the code enforces."""

from __future__ import annotations

from typing import Any

from mira.plans.domain import MAX_DESCRIPTION, MAX_GOALS, MAX_NAME, MAX_WEEKS
from mira.plans.validation import MAX_MILESTONES, MAX_TEXT, MAX_TITLE, PROJECT, REPOSITORY, TARGETS


def _text(limit: int, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": r"\S", **extra}


_DATE = {"type": "string", "format": "date", "example": "2026-01-05"}

GENERATE_PLAN: dict[str, Any] = {
    "type": "object",
    "required": ["name", "goals", "duration_weeks"],
    "properties": {
        "name": _text(MAX_NAME),
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION, "nullable": True},
        "goals": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_GOALS,
            "items": _text(MAX_NAME),
            "description": f"At most {MAX_GOALS} goals of {MAX_NAME} characters each.",
        },
        "duration_weeks": {"type": "integer", "minimum": 1, "maximum": MAX_WEEKS},
        "start_date": {**_DATE, "nullable": True, "description": "Default: today (UTC)."},
    },
}

_TASK = {
    "type": "object",
    "required": ["title"],
    "properties": {
        "title": _text(MAX_TITLE),
        "description": {"type": "string", "maxLength": MAX_TEXT},
        "week": {"type": "integer"},
    },
}
_MILESTONE = {
    "type": "object",
    "required": ["title"],
    "properties": {
        "title": _text(MAX_TITLE),
        "goal": {"type": "string", "maxLength": MAX_TEXT},
        "due_date": _DATE,
        "tasks": {"type": "array", "items": _TASK},
    },
}
PLAN = {
    "type": "object",
    "required": ["milestones"],
    "properties": {
        "milestones": {"type": "array", "maxItems": MAX_MILESTONES, "items": _MILESTONE}
    },
}

PUBLISH_PLAN: dict[str, Any] = {
    "type": "object",
    "required": ["target", "plan"],
    "properties": {
        "target": {"type": "string", "enum": list(TARGETS)},
        "repository": {"type": "string", "pattern": REPOSITORY.pattern},
        "project": {"type": "string", "pattern": PROJECT.pattern},
        "plan": {"oneOf": [PLAN, GENERATE_PLAN], "description": "A plan or generate_plan's input"},
    },
}
