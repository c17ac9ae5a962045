"""The interface every traffic router implements (Envoy, Istio, Gateway API).

`apply()` writes a whole RoutingState, reads the gateway back and verifies it matches; a
router never leaves a half-applied change unreported. `get_state()` reads what the gateway
serves now, which is what a rollback saves and restores. `forget()` removes what the gateway
still keeps for a version that no longer receives traffic (clusters, subsets, pinned routes),
the gateway's part of retiring it.
"""

from __future__ import annotations

import abc

from llm_release.routing.state import RoutingState


class TrafficRouter(abc.ABC):
    kind: str = "abstract"

    @abc.abstractmethod
    def get_state(self, model: str) -> RoutingState | None:
        """What the gateway serves now for `model` (None when it has no route for it)."""

    @abc.abstractmethod
    def apply(self, state: RoutingState) -> RoutingState:
        """Write `state`, read it back, and return what the gateway now serves (== state)."""

    @abc.abstractmethod
    def forget(self, model: str, version: int) -> RoutingState | None:
        """Remove what the gateway keeps for `version` of `model`, read it back, return the routing.

        Refused with SpecError (field "version", naming the current routing) while the version
        receives any traffic in what the gateway serves now: weights, header routes or mirror.
        Forgetting a version the gateway does not know changes nothing. RoutingError when the
        gateway still knows the version after the change.
        """

    def known_versions(self, model: str) -> set[int]:
        """Versions of `model` the gateway keeps something for (what `forget` would remove), plus
        those receiving traffic. Routers that keep versions beyond the routing override this."""
        current = self.get_state(model)
        return set(current.versions) if current else set()

    def set_weights(self, model: str, weights: dict[int, int]) -> RoutingState:
        """Change only the split; header routes and mirror stay as they are."""
        current = self.get_state(model)
        target = current.with_weights(weights) if current else RoutingState(model, dict(weights))
        return self.apply(target)

    def switch(self, model: str, version: int) -> RoutingState:
        """Blue-green: all traffic to `version` (the others stay loaded: switching back is one call)."""
        current = self.get_state(model)
        return self.apply(current.switched_to(version) if current else RoutingState(model, {version: 100}))
