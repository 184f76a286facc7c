"""A local plugin that implements every hook, loaded from tests/plugins/ like a user's plugins/ file.

Every call is appended to ``CALLS`` as ``(hook name, detail)``; each manager imports a fresh copy of
this module, so ``pm.get_plugin("plugins/all_hooks.py").CALLS`` holds that manager's calls only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hotfolder import get_plugin_logger, hookimpl

logger = get_plugin_logger(__name__)
CALLS: list[tuple[str, Any]] = []


@hookimpl
def check_settings(settings: Any) -> None:
    CALLS.append(("check_settings", settings))
    if (getattr(settings, "plugin_config", None) or {}).get("all_hooks", {}).get("refuse"):
        raise ValueError("all_hooks was told to refuse these settings")


@hookimpl
def parse_scenario_file(path: Path, text: str) -> list[tuple[dict[str, Any], int | None]] | None:
    """``.prompts`` files: one prompt per line, as ``params.prompt``; ``!`` alone on a line breaks."""
    CALLS.append(("parse_scenario_file", path.name))
    if path.suffix.lower() != ".prompts":
        return None
    jobs: list[tuple[dict[str, Any], int | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() == "!":
            raise RuntimeError("a line with only '!'")
        if line.strip():
            jobs.append(({"params": {"prompt": line.strip()}, "style": "loud"}, number))
    return jobs


def check_style(value: Any) -> str | None:
    if value not in ("loud", "quiet"):
        raise ValueError(f"style must be 'loud' or 'quiet', not {value!r}")
    return None


@hookimpl
def register_scenario_keys(register: Any) -> None:
    CALLS.append(("register_scenario_keys", None))
    register("style", description="loud or quiet", check=check_style)


@hookimpl
def prepare_jinja2_environment(env: Any) -> None:
    CALLS.append(("prepare_jinja2_environment", env))
    env.filters["shout"] = lambda text: str(text).upper() + "!"
    env.globals["plugin_greeting"] = "hello from all_hooks"


@hookimpl
def prepare_template_context(context: dict[str, Any], spec: Any) -> None:
    CALLS.append(("prepare_template_context", spec.name))
    context["style"] = spec.options.get("style", "quiet")
    if "prompt" in context and context["style"] == "loud":
        context["prompt"] = str(context["prompt"]).upper()


@hookimpl
def parse_workflow(data: Any, name: str, object_info: Any) -> dict[str, Any] | None:
    """A ``{"all_hooks": [[class_type, inputs], ...]}`` template: node ids are the positions from 1."""
    CALLS.append(("parse_workflow", name))
    if not (isinstance(data, dict) and isinstance(data.get("all_hooks"), list)):
        return None
    return {str(i): {"class_type": c, "inputs": inputs} for i, (c, inputs) in enumerate(data["all_hooks"], start=1)}


@hookimpl
def prepare_workflow(workflow: dict[str, Any], spec: Any, template: Any) -> None:
    CALLS.append(("prepare_workflow", (spec.name, template.name)))
    for node in workflow.values():
        node.setdefault("_meta", {})["all_hooks"] = template.name


def stamp(job: Any) -> None:
    text = job.options.get("text", "stamped")
    path = job.folder / job.free_name("stamp.txt")
    path.write_text(text, encoding="utf-8")
    job.add_output(path, kind="text", node=None)
    job.sidecar["stamp"] = text
    logger.info("stamped %s", job.name)


def check_stamp(options: dict[str, Any]) -> dict[str, Any]:
    if set(options) - {"text"}:
        raise ValueError(f"unknown options {sorted(set(options) - {'text'})}")
    return {"text": "stamped", **options}


@hookimpl
def register_postprocessors(register: Any) -> None:
    CALLS.append(("register_postprocessors", None))
    register("stamp", stamp, description="write stamp.txt", check=check_stamp)


@hookimpl
def track_event(event: Any, settings: Any) -> None:
    CALLS.append(("track_event", event.kind))
