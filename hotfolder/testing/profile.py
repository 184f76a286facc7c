"""Protocol profiles: what the test server answers differently depending on the ComfyUI version it plays.

Two profiles: ``"0.3"`` (the default), ComfyUI 0.3.64 as captured in the comfy-protocol notes, and
``"0.4x"``, the newest behaviour the evidence documents (docs/comfy-protocol/PROFILES.md lists each one
with the ComfyUI file@commit it comes from). What differs between ComfyUI versions lives here and nowhere else: the routes served (each under ``/`` and
``/api``), the versions ``/system_stats`` reports, the node catalogue, the feature flags, and how
``POST /prompt`` takes a ``prompt_id``. A newer version is a new :class:`Profile` (with any new handler
added to :class:`~hotfolder.testing.routes.Routes`), not edits scattered through the handlers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .catalog import CORE_OBJECT_INFO, OBJECT_INFO_2026
from .replacements import LONGER_EDGE, NodeReplacement

__all__ = ["DEFAULT_PROFILE", "PROFILES", "InvalidPromptId", "Profile"]

#: A route: (HTTP method, path, name of its handler in :class:`~hotfolder.testing.routes.Routes`).
Route = tuple[str, str, str]

#: The routes of ComfyUI 0.3.64 that the test server serves, each also under ``/api``.
ROUTES_0_3: tuple[Route, ...] = (
    ("GET", "/ws", "websocket"),
    ("GET", "/embeddings", "get_list"),
    ("GET", "/extensions", "get_list"),
    ("GET", "/models", "get_models"),
    ("GET", "/models/{folder}", "get_model_folder"),
    ("GET", "/system_stats", "get_system_stats"),
    ("GET", "/features", "get_features"),
    ("GET", "/prompt", "get_prompt"),
    ("POST", "/prompt", "post_prompt"),
    ("GET", "/queue", "get_queue"),
    ("POST", "/queue", "post_queue"),
    ("POST", "/interrupt", "post_interrupt"),
    ("POST", "/free", "post_free"),
    ("GET", "/history", "get_history"),
    ("GET", "/history/{prompt_id}", "get_history_item"),
    ("POST", "/history", "post_history"),
    ("GET", "/object_info", "get_object_info"),
    ("GET", "/object_info/{node_class}", "get_object_info_node"),
    ("GET", "/view", "get_view"),
    ("POST", "/upload/image", "post_upload_image"),
    ("GET", "/settings", "get_settings"),
    ("GET", "/users", "get_users"),
)


#: The routes of the 0.4x profile: 0.3.64's plus the jobs API. ComfyUI declares these as ``/api/jobs...``
#: and prefixes every route with ``/api`` once more, so ``/api/api/jobs`` answers too and ``/jobs`` does
#: not (server.py@002c3fb9a504255ccb3edb668c08b8f56e63d14a, ``get_jobs``, ``add_routes``). Also
#: ``/node_replacements`` (app/node_replace_manager.py, ``add_routes``); 0.3.64 answers it 404, as any
#: unknown path (aiohttp's "404: Not Found", from its router or the frontend's static route at ``/``).
ROUTES_0_4X: tuple[Route, ...] = (
    *ROUTES_0_3,
    ("GET", "/node_replacements", "get_node_replacements"),
    ("GET", "/api/jobs", "get_jobs"),
    ("POST", "/api/jobs/cancel", "post_jobs_cancel"),
    ("GET", "/api/jobs/{job_id}", "get_job"),
    ("POST", "/api/jobs/{job_id}/cancel", "post_job_cancel"),
)


class InvalidPromptId(ValueError):
    """A client's ``prompt_id`` that the profile refuses (0.4x: not a canonical lowercase UUID)."""


def canonical_uuid(value: Any) -> str:
    """``value`` if it is a UUID string in canonical lowercase hyphenated form, else ``InvalidPromptId``
    (ComfyUI's ``validate_job_id``, comfy_execution/jobs.py@172be438576532bd3d7243c5608ddde8a31e2944)."""
    if not isinstance(value, str):
        raise InvalidPromptId(f"job id must be a string, got {type(value).__name__}")
    try:
        parsed = uuid.UUID(value)
    except ValueError as err:
        raise InvalidPromptId(str(err)) from err
    if str(parsed) != value:
        raise InvalidPromptId("job id must be a UUID in canonical lowercase hyphenated form")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """One ComfyUI version as the test server plays it."""

    name: str
    comfyui_version: str  # system.comfyui_version in /system_stats
    frontend_version: str
    templates_version: str
    pytorch_version: str
    object_info: str  # the catalogue snapshot, a resource of this package
    routes: tuple[Route, ...]
    test_pack: tuple[str, ...] = ("TestSleep",)  # custom-node classes added to the catalogue (catalog.TEST_PACK)
    max_upload_size: int = 100 * 1024 * 1024
    strict_prompt_ids: bool = False  # POST /prompt refuses a prompt_id that is not a canonical UUID
    create_time: bool = False  # POST /prompt stamps extra_data["create_time"] (ms), read by the jobs API
    asset_ids: bool = False  # output entries carry "id" (and "preview_id" for images), like --enable-assets
    asset_scan_events: bool = False  # the first GET /object_info broadcasts assets.seed.* messages
    # deprecated classes POST /prompt rewrites (replacements.py); their old classes leave the catalogue
    node_replacements: tuple[NodeReplacement, ...] = ()

    def features(self) -> dict[str, Any]:
        """``GET /features``, also the server's ``feature_flags`` reply on the WebSocket."""
        return {"supports_preview_metadata": True, "max_upload_size": self.max_upload_size}

    def prompt_id(self, body: dict[str, Any]) -> str:
        """The id ``POST /prompt`` files the prompt under. 0.3: the client's, whatever it is, else a new
        UUID (server.py@a125cd84). 0.4x: absent or null mints one, anything else must be a canonical UUID
        or :class:`InvalidPromptId` is raised (server.py@002c3fb9a504255ccb3edb668c08b8f56e63d14a)."""
        if not self.strict_prompt_ids:
            return str(body.get("prompt_id", uuid.uuid4()))
        client_id = body.get("prompt_id")
        return str(uuid.uuid4()) if client_id is None else canonical_uuid(client_id)


PROFILES: dict[str, Profile] = {
    "0.3": Profile(
        name="0.3",
        comfyui_version="0.3.64-hotfolder-testing",
        frontend_version="1.27.10",
        templates_version="0.1.95",
        pytorch_version="2.14.1+cpu",
        object_info=CORE_OBJECT_INFO,
        routes=ROUTES_0_3,
    ),
    "0.4x": Profile(
        name="0.4x",
        comfyui_version="0.4x-hotfolder-testing",
        frontend_version="1.41.5",
        templates_version="0.1.123",
        pytorch_version="2.14.1+cpu",
        object_info=OBJECT_INFO_2026,
        routes=ROUTES_0_4X,
        test_pack=("TestSleep", "VHS_VideoCombine"),
        strict_prompt_ids=True,
        create_time=True,
        asset_ids=True,
        asset_scan_events=True,
        node_replacements=(LONGER_EDGE,),
    ),
}

DEFAULT_PROFILE = PROFILES["0.3"]
