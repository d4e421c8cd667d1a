"""The LLMBudgets and BurstBudgets the operator knows, kept current by Kopf's watch
events: publishing and status sync read memory instead of listing every resource from
the API server each time.

A watch can miss things. A resource deleted while the operator was down, or while a
watch was being re-established, sends no event; nor does anything that happened
while another replica was active. So the loop also lists both kinds at start and every
``--resync-interval-seconds`` and hands the result to ``replace``. Resource versions
decide between what the list says and what the watch said: the newer one wins, and a
resource missing from the list is dropped only if the watch has not told of it since
the list was taken. (Resource versions are compared as integers, as etcd gives them.)

What compiling depends on (spec and metadata) and what only the status sync reads
(status) are told apart: a status written by the operator itself changes no config.
An unchanged resource keeps its manifest object, so a sync can tell "unchanged" by
identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from budget_guard.operator.compile import Manifest, key_of, trim


@dataclass(frozen=True)
class _Entry:
    version: int  # metadata.resourceVersion
    manifest: dict[str, Any]  # trimmed


def slim(resource: Mapping[str, Any]) -> dict[str, Any]:
    """What the cache needs of a listed resource: the trimmed manifest and its version."""
    trimmed = trim(resource)
    version = resource.get("metadata", {}).get("resourceVersion")
    if version is not None:
        trimmed["metadata"]["resourceVersion"] = version
    return trimmed


def resource_version(resource: Mapping[str, Any]) -> int:
    return int(resource.get("metadata", {}).get("resourceVersion") or 0)


def _config_part(manifest: Mapping[str, Any]) -> tuple[Any, Any]:
    return manifest.get("metadata"), manifest.get("spec")


class ResourceCache:
    """The resources of the kinds it is given, by plural, then by namespace/name."""

    def __init__(self, plurals: Iterable[str]) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {plural: {} for plural in plurals}
        # Deleted resources by the resourceVersion of their deletion, until a list newer
        # than that is applied: a list taken before the deletion must not revive them.
        self._deleted: dict[str, dict[str, int]] = {plural: {} for plural in plurals}

    def manifests(self, plural: str) -> list[Manifest]:
        return [entry.manifest for entry in self._entries[plural].values()]

    def get(self, plural: str, key: str) -> Manifest | None:
        entry = self._entries[plural].get(key)
        return entry.manifest if entry is not None else None

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def observe(self, plural: str, resource: Mapping[str, Any]) -> bool:
        """A resource as a watch event (or a list) shows it; True if the config changed."""
        key, version = key_of(resource), resource_version(resource)
        entries = self._entries[plural]
        known = entries.get(key)
        if known is not None and known.version >= version:
            return False  # older than what we have
        if self._deleted[plural].get(key, -1) >= version:
            return False  # from before its deletion
        self._deleted[plural].pop(key, None)
        manifest = trim(resource)
        if known is None:
            entries[key] = _Entry(version, manifest)
            return True
        if _config_part(known.manifest) != _config_part(manifest):
            entries[key] = _Entry(version, manifest)
            return True
        if known.manifest.get("status") == manifest.get("status"):
            manifest = known.manifest  # unchanged for the operator: the same object
        entries[key] = _Entry(version, manifest)
        return False

    def forget(self, plural: str, resource: Mapping[str, Any]) -> bool:
        """A resource deleted (a watch's DELETED event); True if it was known."""
        key, version = key_of(resource), resource_version(resource)
        known = self._entries[plural].get(key)
        if known is not None and known.version > version:
            return False  # a newer resource of the same name
        self._deleted[plural][key] = max(version, self._deleted[plural].get(key, -1))
        return self._entries[plural].pop(key, None) is not None

    def replace(
        self,
        plural: str,
        listed: Iterable[Mapping[str, Any]],
        list_version: int,
        namespace: str | None = None,
    ) -> bool:
        """A complete list of ``plural`` (in ``namespace``, or everywhere) taken at
        ``list_version``: add and update what it holds, drop what it lacks unless the
        watch told of it later. True if the config changed."""
        changed = False
        present = set()
        for resource in listed:
            present.add(key_of(resource))
            changed |= self.observe(plural, resource)
        entries = self._entries[plural]
        for key in [k for k in entries if _in(k, namespace) and k not in present]:
            if entries[key].version <= list_version:
                del entries[key]  # deleted while nobody was watching
                changed = True
        deleted = self._deleted[plural]
        for key in [k for k, v in deleted.items() if _in(k, namespace) and v <= list_version]:
            del deleted[key]
        return changed


def _in(key: str, namespace: str | None) -> bool:
    return namespace is None or key.startswith(namespace + "/")
