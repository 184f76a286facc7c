"""Protocol profiles: what the test server answers differently depending on the ComfyUI version it plays.

There is one profile today, ``"0.3"``: ComfyUI 0.3.64, as captured in the comfy-protocol notes. What
differs between ComfyUI versions lives here and nowhere else: the routes served (each under ``/`` and
``/api``), the versions ``/system_stats`` reports, the node catalogue, the feature flags, and how
``POST /prompt`` takes a ``prompt_id``. A newer version is a new :class:`Profile` (with any new handler
added to :class:`~hotfolder.testing.routes.Routes`), not edits scattered through the handlers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .catalog import CORE_OBJECT_INFO

__all__ = ["DEFAULT_PROFILE", "PROFILES", "Profile"]

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
    max_upload_size: int = 100 * 1024 * 1024

    def features(self) -> dict[str, Any]:
        """``GET /features``, also the server's ``feature_flags`` reply on the WebSocket."""
        return {"supports_preview_metadata": True, "max_upload_size": self.max_upload_size}

    def prompt_id(self, body: dict[str, Any]) -> str:
        """The id ``POST /prompt`` files the prompt under: the client's, whatever it is, else a new UUID."""
        return str(body.get("prompt_id", uuid.uuid4()))


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
}

DEFAULT_PROFILE = PROFILES["0.3"]
