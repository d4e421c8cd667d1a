"""The operator's resource cache: watch events and resync lists, whatever their order,
leave it holding what the API server holds. Pure: resource versions decide."""

from __future__ import annotations

from typing import Any

from budget_guard.operator.cache import ResourceCache

PLURAL = "llmbudgets"


def budget(
    name: str, version: int, limit: str = "1", namespace: str = "team", **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "budgetguard.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": str(version),
            "generation": 1,
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"limit": limit, "scope": {"tenant": name}},
        "status": status,
    }


def names(cache: ResourceCache) -> list[str]:
    return sorted(m["metadata"]["name"] for m in cache.manifests(PLURAL))


def fresh(*resources: dict[str, Any]) -> ResourceCache:
    cache = ResourceCache([PLURAL])
    for resource in resources:
        cache.observe(PLURAL, resource)
    return cache


def test_a_new_or_respecified_resource_changes_the_config_and_a_status_does_not() -> None:
    cache = ResourceCache([PLURAL])
    assert cache.observe(PLURAL, budget("a", 10))
    assert not cache.observe(PLURAL, budget("a", 11, state="Ok"))
    assert cache.get(PLURAL, "team/a") == {
        "apiVersion": "budgetguard.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "a", "namespace": "team", "generation": 1},
        "spec": {"limit": "1", "scope": {"tenant": "a"}},
        "status": {"state": "Ok"},
    }
    assert cache.observe(PLURAL, budget("a", 12, limit="2", state="Ok"))


def test_an_unchanged_resource_keeps_its_manifest_object() -> None:
    cache = fresh(budget("a", 10, state="Ok"))
    before = cache.get(PLURAL, "team/a")
    cache.observe(PLURAL, budget("a", 11, state="Ok"))  # e.g. Kopf's own annotations
    assert cache.get(PLURAL, "team/a") is before
    cache.observe(PLURAL, budget("a", 12, state="SoftLimit"))
    assert cache.get(PLURAL, "team/a") is not before


def test_an_older_event_never_overwrites_a_newer_one() -> None:
    cache = fresh(budget("a", 20, limit="5"))
    assert not cache.observe(PLURAL, budget("a", 15, limit="1"))
    manifest = cache.get(PLURAL, "team/a")
    assert manifest is not None and manifest["spec"]["limit"] == "5"


def test_a_deletion_is_not_undone_by_an_older_list() -> None:
    cache = fresh(budget("a", 10), budget("b", 11))
    assert cache.forget(PLURAL, budget("a", 30))
    # A list taken before the deletion still holds "a".
    cache.replace(PLURAL, [budget("a", 10), budget("b", 11)], list_version=25)
    assert names(cache) == ["b"]


def test_a_resync_drops_what_was_deleted_unseen_and_adds_what_was_created_unseen() -> None:
    cache = fresh(budget("gone", 10), budget("kept", 11))
    changed = cache.replace(PLURAL, [budget("kept", 11), budget("new", 40)], list_version=50)
    assert changed
    assert names(cache) == ["kept", "new"]


def test_a_resync_keeps_what_the_watch_told_after_the_list_was_taken() -> None:
    cache = fresh(budget("kept", 11))
    cache.observe(PLURAL, budget("later", 60))  # created after the list below
    cache.observe(PLURAL, budget("kept", 61, limit="9"))
    assert not cache.replace(PLURAL, [budget("kept", 11)], list_version=50)
    assert names(cache) == ["kept", "later"]
    manifest = cache.get(PLURAL, "team/kept")
    assert manifest is not None and manifest["spec"]["limit"] == "9"


def test_a_resync_of_one_namespace_leaves_the_others_alone() -> None:
    cache = fresh(budget("a", 10, namespace="one"), budget("b", 11, namespace="two"))
    cache.replace(PLURAL, [], list_version=50, namespace="one")
    assert names(cache) == ["b"]


def test_an_unchanged_resync_changes_nothing() -> None:
    listed = [budget("a", 10), budget("b", 11)]
    cache = fresh(*listed)
    assert not cache.replace(PLURAL, listed, list_version=11)
    assert len(cache) == 2
