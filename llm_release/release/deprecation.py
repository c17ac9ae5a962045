"""Deprecation across environments: which versions each environment retires, and retiring them.

The daily deprecation DAG (and anything else) plans per environment and model with
`plan_environment`, then retires each planned version with `retire_in_environment` (the rules
and the refusals are llm_release.release.retirement's). A version READY in another environment
is kept; environments that share one Triton (the local stack plays staging and production on
one) are not "another" environment for that rule, or nothing there could ever be retired.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_release.release.retirement import RetentionPolicy, plan_retirement, retire_version

LOG = logging.getLogger("llm_release.release.deprecation")
SCHEDULED_MODES = ("retire", "dry_run")


def models_in(env) -> list[str]:
    """Every model installed in the environment's model repository (sorted)."""
    repo = env.triton.model_repository
    if not repo or not Path(repo).is_dir():
        return []
    return sorted(p.name for p in Path(repo).iterdir() if p.is_dir() and not p.name.startswith("."))


def ready_elsewhere(envs, env, model: str) -> dict[int, list[str]]:
    """version -> the other environments (by their own Triton) where it is READY."""
    out: dict[int, list[str]] = {}
    for other in envs.environments:
        if other.key == env.key or other.triton.url == env.triton.url:
            continue
        for version in other.served_versions().ready_versions(model):
            out.setdefault(version, []).append(other.key)
    return out


def plan_environment(envs, env, *, models: list[str] | None = None, policy: RetentionPolicy) -> list[dict]:
    """One plan per model: what is kept and why, what is retired (oldest first)."""
    from llm_release.model_repo import installed_versions

    served, router = env.served_versions(), env.router_instance()
    plans = []
    for model in models or models_in(env):
        installed = set(served.ready_versions(model))
        if env.triton.model_repository:
            installed |= set(installed_versions(env.triton.model_repository, model))
        plan = plan_retirement(model, installed=sorted(installed), routing=router.get_state(model),
                               ready_elsewhere=ready_elsewhere(envs, env, model), policy=policy)
        plans.append({"environment": env.name, "region": env.region, "model": model,
                      "keep": {str(v): why for v, why in sorted(plan.keep.items())}, "retire": plan.retire})
    return plans


def retire_in_environment(env, model: str, version: int, *, policy: RetentionPolicy, store=None,
                          log: logging.Logger = LOG):
    """Retire one planned version (refused with the numbers when it still has traffic)."""
    model_repository = Path(env.triton.model_repository) if env.triton.model_repository else None
    return retire_version(model, version, router=env.router_instance(), served=env.served_versions(),
                          model_repository=model_repository, prometheus=env.metrics(),
                          window_s=policy.zero_traffic_window_s, store=store if policy.remove_from_store else None,
                          log=log)
