"""Find the usual parameter roles in a plain exported API workflow, without relying on node ids.

:func:`find_roles` returns a :class:`RoleMap`: ``roles`` maps a role to the node input that plays it
(``{"prompt": "6.text", "seed": "3.seed", ...}``) and ``reasons`` says why each role that is absent
could not be found or was ambiguous. Because roles are found from the graph's shape and input
names, a workflow re-saved with new node ids keeps working.

The roles use the parameter names of the shipped templates' sidecars:

``prompt``, ``negative``
    The ``text`` of the text encoder reached from the sampler's ``positive`` / ``negative`` link,
    through conditioning nodes in between (ControlNet, area, combine...). A sampler is a node with
    both ``positive`` and ``negative`` links (KSampler, KSamplerAdvanced, SamplerCustom, CFGGuider);
    nodes that also have those links but no sampler settings (``cfg``, ``seed``, ``steps``) are used
    only when there is no sampler. If the ``text`` is itself linked to a primitive node, the
    primitive's value is the role.
``seed``, ``steps``, ``cfg``, ``sampler``, ``scheduler``, ``denoise``
    The literal inputs ``seed``/``noise_seed``, ``steps``, ``cfg``, ``sampler_name``, ``scheduler``
    and ``denoise`` (on the sampler, or on the RandomNoise, KSamplerSelect, BasicScheduler nodes of
    a custom sampler), or the primitive node they are linked to.
``width``, ``height``, ``batch_size``
    Of the nearest node upstream of a sampler's ``latent_image`` that has literal ``width`` and
    ``height`` (EmptyLatentImage and friends).
``checkpoint``
    A literal ``ckpt_name``.
``prefix``
    A literal ``filename_prefix`` (SaveImage and the other Save nodes).
``image``
    The ``image`` of a LoadImage node (the input an uploaded file goes to).

A role is left out when it is not there, or when it is ambiguous: two candidates with different
addresses (an SDXL base + refiner workflow has two samplers, so two seeds). Candidates that share
one source (two samplers linked to one primitive) are one address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.templates.nodes import is_link

__all__ = ["ROLES", "ROLE_INPUTS", "RoleMap", "find_roles"]

#: Every role :func:`find_roles` knows, in a stable order.
ROLES: tuple[str, ...] = (
    "prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "denoise",
    "width", "height", "batch_size", "checkpoint", "prefix", "image",
)  # fmt: skip

#: Roles found by input name alone, and the input names that play them.
ROLE_INPUTS: dict[str, tuple[str, ...]] = {
    "seed": ("seed", "noise_seed"),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "sampler": ("sampler_name",),
    "scheduler": ("scheduler",),
    "denoise": ("denoise",),
    "checkpoint": ("ckpt_name",),
    "prefix": ("filename_prefix",),
}

#: Inputs of a text encoder that hold the prompt, best first.
TEXT_INPUTS: tuple[str, ...] = ("text", "prompt", "text_g", "t5xxl", "clip_l", "text_l", "string", "value")
#: Inputs that mark a node as a real sampler rather than a conditioning node with positive/negative.
_SAMPLER_SETTINGS = frozenset({"cfg", "seed", "noise_seed", "steps", "sampler_name"})
_MAX_DEPTH = 32


@dataclass
class RoleMap:
    """``roles``: role -> ``"<node_id>.<input>"``; ``reasons``: role -> why it is absent;
    ``ambiguous``: role -> the addresses that could each play it (for the roles left out as ambiguous)."""

    roles: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)

    def get(self, role: str) -> str | None:
        """The address of ``role``, or ``None``."""
        return self.roles.get(role)

    def describe(self) -> list[str]:
        """Lines such as ``prompt: 6.text`` and ``seed: not set (ambiguous: 10.noise_seed, 11.noise_seed)``."""
        lines = [f"{role}: {self.roles[role]}" for role in ROLES if role in self.roles]
        lines += [f"{role}: not set ({self.reasons[role]})" for role in ROLES if role in self.reasons]
        return lines


def find_roles(workflow: Mapping[str, Any]) -> RoleMap:
    """Find the parameter roles in an API workflow (see the module docstring); the workflow is not changed."""
    return _RoleFinder(workflow).run()


# --------------------------------------------------------------------------------------------------


class _RoleFinder:
    def __init__(self, workflow: Mapping[str, Any]) -> None:
        self.nodes: dict[str, Mapping[str, Any]] = {}
        for node_id, node in workflow.items():
            if isinstance(node, Mapping) and isinstance(node.get("inputs"), Mapping):
                self.nodes[str(node_id)] = node
        self.ids = _sorted_ids(self.nodes)
        self.result = RoleMap()

    # ---- graph helpers

    def inputs(self, node_id: str) -> Mapping[str, Any]:
        inputs: Mapping[str, Any] = self.nodes[node_id]["inputs"]
        return inputs

    def link(self, node_id: str, name: str) -> str | None:
        value: Any = self.inputs(node_id).get(name)
        if is_link(value) and str(value[0]) in self.nodes:
            return str(value[0])
        return None

    def literal_source(self, node_id: str, name: str, depth: int = 0) -> str | None:
        """The address of the literal that feeds ``node_id.name``: itself, or a primitive it is linked to."""
        inputs = self.inputs(node_id)
        if name not in inputs:
            return None
        value = inputs[name]
        if not is_link(value):
            return f"{node_id}.{name}"
        source = self.link(node_id, name)
        if source is None or depth > _MAX_DEPTH:
            return None
        literals = [k for k, v in self.inputs(source).items() if not is_link(v)]
        links = [k for k, v in self.inputs(source).items() if is_link(v)]
        if len(literals) == 1 and not links:
            return f"{source}.{literals[0]}"  # a primitive: PrimitiveInt.value, a "Seed" node, ...
        if not literals and len(links) == 1:
            return self.literal_source(source, links[0], depth + 1)  # a pass-through (reroute-like)
        return None

    # ---- roles

    def run(self) -> RoleMap:
        samplers = self._samplers()
        self._prompts(samplers)
        for role, names in ROLE_INPUTS.items():
            found: list[str] = []
            for node_id in self.ids:
                for name in names:
                    address = self.literal_source(node_id, name)
                    if address is not None:
                        found.append(address)
            self._decide(role, found, f"no node has a {' or '.join(names)} input")
        self._size(samplers)
        images = [
            f"{node_id}.image"
            for node_id in self.ids
            if self.nodes[node_id].get("class_type") == "LoadImage" and "image" in self.inputs(node_id)
            and not is_link(self.inputs(node_id)["image"])
        ]  # fmt: skip
        self._decide("image", images, "no LoadImage node")
        ordered = {role: self.result.roles[role] for role in ROLES if role in self.result.roles}
        self.result.roles = ordered
        self.result.reasons = {role: self.result.reasons[role] for role in ROLES if role in self.result.reasons}
        return self.result

    def _decide(self, role: str, found: Iterable[str], missing: str) -> None:
        unique = list(dict.fromkeys(found))
        if len(unique) == 1:
            self.result.roles[role] = unique[0]
        elif not unique:
            self.result.reasons[role] = missing
        else:
            self.result.reasons[role] = "ambiguous: " + ", ".join(unique)
            self.result.ambiguous[role] = unique

    def _samplers(self) -> list[str]:
        both = [
            node_id
            for node_id in self.ids
            if self.link(node_id, "positive") is not None and self.link(node_id, "negative") is not None
        ]
        real = [node_id for node_id in both if _SAMPLER_SETTINGS & set(self.inputs(node_id))]
        return real or both

    def _prompts(self, samplers: list[str]) -> None:
        if not samplers:
            for role in ("prompt", "negative"):
                self.result.reasons[role] = "no sampler with positive and negative links"
            return
        for role, polarity, other in (("prompt", "positive", "negative"), ("negative", "negative", "positive")):
            found: list[str] = []
            zeroed = False
            for sampler in samplers:
                source = self.link(sampler, polarity)
                if source is not None:
                    texts, hit_zero = self._texts_upstream(source, polarity, other)
                    found.extend(texts)
                    zeroed = zeroed or hit_zero
            if not found and zeroed:
                missing = f"the sampler's {polarity} conditioning is zeroed out (ConditioningZeroOut), so no text"
            else:
                missing = f"no text encoder found upstream of the sampler's {polarity!r} link"
            self._decide(role, found, missing)
        if "negative" in self.result.roles and self.result.roles["negative"] == self.result.roles.get("prompt"):
            address = self.result.roles.pop("negative")
            self.result.reasons["negative"] = f"the negative conditioning comes from the prompt's own text ({address})"

    def _texts_upstream(self, start: str, polarity: str, other: str) -> tuple[list[str], bool]:
        """Prompt addresses upstream of ``start`` along ``polarity``/conditioning links; and whether a
        ConditioningZeroOut was passed (its text has no effect, so the walk stops there)."""
        found: list[str] = []
        zeroed = False
        seen: set[str] = set()
        stack = [(start, 0)]
        while stack:
            node_id, depth = stack.pop()
            if node_id in seen or depth > _MAX_DEPTH:
                continue
            seen.add(node_id)
            if "ZeroOut" in str(self.nodes[node_id].get("class_type")):
                zeroed = True
                continue
            inputs = self.inputs(node_id)
            text = next((name for name in TEXT_INPUTS if name in inputs), None)
            if text is not None:
                address = self.literal_source(node_id, text)
                if address is not None and _is_text(self._value(address)):
                    found.append(address)
                    continue
            for name in sorted(inputs, reverse=True):
                if name == other or not is_link(inputs[name]):
                    continue
                if name == polarity or name.startswith("cond"):
                    source = self.link(node_id, name)
                    if source is not None:
                        stack.append((source, depth + 1))
        return found, zeroed

    def _size(self, samplers: list[str]) -> None:
        roots = [node_id for node_id in self.ids if self.link(node_id, "latent_image") is not None]
        found: dict[str, list[str]] = {"width": [], "height": [], "batch_size": []}
        for root in roots:
            node_id = self._nearest_sized(self.link(root, "latent_image"))  # type: ignore[arg-type]
            if node_id is None:
                continue
            for role in found:
                address = self.literal_source(node_id, role)
                if address is not None:
                    found[role].append(address)
        why = (
            "no node with width and height upstream of a sampler's latent_image"
            if roots
            else "no sampler with a latent_image link"
        )
        for role, addresses in found.items():
            self._decide(role, addresses, why)

    def _nearest_sized(self, start: str) -> str | None:
        """The closest node upstream of ``start`` (inclusive) with width and height literals."""
        frontier = [start]
        seen: set[str] = set()
        for _ in range(_MAX_DEPTH):
            hits = [
                n for n in frontier
                if self.literal_source(n, "width") is not None and self.literal_source(n, "height") is not None
            ]  # fmt: skip
            if hits:
                return hits[0] if len(hits) == 1 else None
            seen.update(frontier)
            following: list[str] = []
            for node_id in frontier:
                for name in sorted(self.inputs(node_id)):
                    source = self.link(node_id, name)
                    if source is not None and source not in seen and source not in following:
                        following.append(source)
            if not following:
                return None
            frontier = following
        return None

    def _value(self, address: str) -> Any:
        node_id, _, name = address.partition(".")  # a node id has no dot; an input name may
        return self.inputs(node_id).get(name)




def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda node_id: (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id))
