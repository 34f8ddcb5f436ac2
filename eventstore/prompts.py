"""A prompt registry kept as events: versions are registered once and never changed, and
which one is active is itself an event, so the whole history of a prompt is in the log.

    await store.register_prompt("greet", "v1", user="Say hi to {name}", system="Be brief")
    await store.activate_prompt("greet", "v1")
    prompt = await store.prompt("greet")                  # the active version
    with prompt.scope():                                  # calls inside carry its
        client.chat.completions.create(...)               # prompt_name / prompt_version

A `prompt_registered` event holds name, version, system, user and metadata; a
`prompt_activated` event names a version. The registry is the `PromptRegistry`
projection of those events; a name that was never activated has its latest registered
version active. `PromptVersions` compares the versions' calls, costs and ratings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import InvalidEventError, PromptConflictError, PromptNotFoundError
from .events import Event, RecordedEvent
from .projections.base import State, StructProjection
from .scope import MetadataScope

if TYPE_CHECKING:
    from .store import EventStore

__all__ = [
    "PROMPT_ACTIVATED",
    "PROMPT_REGISTERED",
    "Prompt",
    "PromptRegistry",
    "activate_prompt",
    "get_prompt",
    "register_prompt",
]

PROMPT_REGISTERED = "prompt_registered"
PROMPT_ACTIVATED = "prompt_activated"


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a prompt: its templates (str.format placeholders) and metadata."""

    name: str
    version: str
    system: str | None
    user: str
    metadata: dict[str, Any] = {}

    def render(self, **values: Any) -> tuple[str | None, str]:
        """(system, user) with the placeholders filled in."""
        try:
            system = self.system.format(**values) if self.system is not None else None
            return system, self.user.format(**values)
        except KeyError as exc:
            raise PromptNotFoundError(
                f"prompt {self.name!r} {self.version!r} needs a value for {exc.args[0]!r}"
            ) from None

    def scope(self, **metadata: Any) -> MetadataScope:
        """A block whose recorded calls carry this prompt's name and version."""
        return MetadataScope(prompt_name=self.name, prompt_version=self.version, **metadata)


class PromptEntry(msgspec.Struct):
    versions: dict[str, Prompt] = msgspec.field(default_factory=dict)
    order: list[str] = msgspec.field(default_factory=list)
    active: str | None = None


class RegistryState(State, kw_only=True):
    prompts: dict[str, PromptEntry] = msgspec.field(default_factory=dict)


class PromptRegistry(StructProjection[RegistryState]):
    """Every prompt's versions, in registration order, and the active one."""

    name = "prompt_registry"
    types = frozenset({PROMPT_REGISTERED, PROMPT_ACTIVATED})

    def _empty(self) -> RegistryState:
        return RegistryState()

    def apply(self, event: RecordedEvent) -> None:
        data = event.data
        try:
            if event.type == PROMPT_REGISTERED:
                prompt = msgspec.convert(data, Prompt)
                entry = self._state.prompts.setdefault(prompt.name, PromptEntry())
                if prompt.version not in entry.versions:
                    entry.order.append(prompt.version)
                    entry.versions[prompt.version] = prompt
            else:
                entry = self._state.prompts[data["name"]]
                if data["version"] not in entry.versions:
                    raise KeyError(data["version"])
                entry.active = data["version"]
        except (msgspec.ValidationError, KeyError, TypeError):
            self._state.skipped += 1

    def names(self) -> list[str]:
        return sorted(self._state.prompts)

    def versions(self, name: str) -> list[str]:
        """The versions of `name` in registration order ([] if unknown)."""
        entry = self._state.prompts.get(name)
        return list(entry.order) if entry is not None else []

    def active_version(self, name: str) -> str | None:
        entry = self._state.prompts.get(name)
        if entry is None or not entry.order:
            return None
        return entry.active if entry.active is not None else entry.order[-1]

    def get(self, name: str, version: str | None = None) -> Prompt:
        entry = self._state.prompts.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none yet"
            raise PromptNotFoundError(
                f"no prompt named {name!r} is registered (known: {known}); register it "
                "with store.register_prompt(name, version, user=...)")
        wanted = version if version is not None else self.active_version(name)
        prompt = entry.versions.get(wanted) if wanted is not None else None
        if prompt is None:
            raise PromptNotFoundError(
                f"prompt {name!r} has no version {wanted!r}; its versions: "
                f"{', '.join(entry.order)}")
        return prompt


def _version(version: Any) -> str:
    # "3" is what anyone passing 3 meant (as PromptVersions reads metadata)
    if isinstance(version, int) and not isinstance(version, bool):
        return str(version)
    if not isinstance(version, str) or not version:
        raise InvalidEventError(f"a prompt version must be a non-empty string, got {version!r}")
    return version


def _check_text(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or (not optional and not value):
        raise InvalidEventError(f"prompt {name} must be a non-empty string, got {value!r}")


async def registry(store: EventStore) -> PromptRegistry:
    return await store.rebuild(PromptRegistry())


async def register_prompt(store: EventStore, name: str, version: str | int, *, user: str,
                          system: str | None = None,
                          metadata: Mapping[str, Any] | None = None) -> Prompt:
    wanted = _version(version)
    _check_text("name", name)
    _check_text("version", wanted)
    _check_text("user template", user)
    _check_text("system template", system, optional=True)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidEventError("prompt metadata must be a dict")
    prompt = Prompt(name=name, version=wanted, system=system, user=user,
                    metadata=dict(metadata or {}))
    try:
        known = (await registry(store)).get(name, wanted)
    except PromptNotFoundError:
        known = None
    if known is not None:
        if known != prompt:
            raise PromptConflictError(
                f"prompt {name!r} version {wanted!r} is already registered with other "
                "content; versions never change: register a new version")
        return known  # registering the same version again changes nothing
    await store.append(Event(type=PROMPT_REGISTERED, data=msgspec.to_builtins(prompt),
                             metadata={"prompt_name": name, "prompt_version": wanted}))
    return prompt


async def activate_prompt(store: EventStore, name: str, version: str | int) -> Prompt:
    wanted = _version(version)
    prompt = (await registry(store)).get(name, wanted)  # raises for an unknown one
    await store.append(Event(type=PROMPT_ACTIVATED, data={"name": name, "version": wanted},
                             metadata={"prompt_name": name, "prompt_version": wanted}))
    return prompt


async def get_prompt(store: EventStore, name: str, version: str | int | None = None) -> Prompt:
    wanted = _version(version) if version is not None else None
    return (await registry(store)).get(name, wanted)
