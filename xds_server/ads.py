"""Delta xDS over ADS: every connected Envoy gets only the resources that changed, and says so.

With incremental (delta) xDS a response carries just the resources added, changed or removed,
each by name, and Envoy answers every response with an ACK or a NACK naming the nonce. A change
to one model is thus one small message whatever the number of models on the gateway, and its
ACK is Envoy's confirmation that the change is in force (a NACK carries Envoy's reason; Envoy
then keeps what it had).

A (re)connecting Envoy says which resources it already has (`initial_resource_versions`); it is
sent the ones that differ and told to drop the ones the control plane no longer has, so an
Envoy that restarts, or a control plane that restarts, converges on the stored routing.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_server.store import Resource, ResourceStore

LOG = logging.getLogger("xds_server.ads")
_CLOSE = object()


@dataclass
class Pending:
    """One response sent to one Envoy, until it ACKs or NACKs it."""

    node: str
    type_url: str
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


@dataclass
class Subscription:
    wildcard: bool
    names: set[str] = field(default_factory=set)

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names


class EnvoyStream:
    """One Envoy's ADS stream: what it subscribed to, and the responses awaiting its answer."""

    _ids = itertools.count(1)

    def __init__(self, peer: str):
        self.id = next(self._ids)
        self.peer = peer
        self.node = f"stream-{self.id}"
        self.subscriptions: dict[str, Subscription] = {}
        self.pending: dict[str, Pending] = {}
        self.acked = 0
        self.nacked = 0
        self.out: queue.Queue = queue.Queue()

    def send(self, type_url: str, upserts: list[Resource], removals: list[str]) -> Pending:
        nonce = f"{self.id}-{next(self._ids)}"
        response = discovery_pb2.DeltaDiscoveryResponse(type_url=type_url, nonce=nonce)
        for res in upserts:
            response.resources.add(name=res.name, version=res.version, resource=res.packed)
        response.removed_resources.extend(removals)
        pending = Pending(self.node, type_url)
        self.pending[nonce] = pending
        self.out.put(response)
        return pending


class DeltaAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS service: streams in, resources out; `broadcast` pushes one change to every Envoy."""

    def __init__(self, store: ResourceStore):
        self.store = store
        self._lock = threading.Lock()  # streams and their subscriptions; held while sending
        self._streams: list[EnvoyStream] = []

    def streams(self) -> list[dict]:
        with self._lock:
            return [{"node": s.node, "peer": s.peer, "types": sorted(s.subscriptions), "acked": s.acked,
                     "nacked": s.nacked, "awaiting": len(s.pending)} for s in self._streams]

    def broadcast(self, type_url: str, upserts: list[Resource], removals: list[str]) -> list[Pending]:
        """Send a change of one type to every Envoy subscribed to it (each gets what it covers)."""
        sent = []
        with self._lock:
            for stream in self._streams:
                sub = stream.subscriptions.get(type_url)
                if sub is None:
                    continue
                ups = [r for r in upserts if sub.covers(r.name)]
                gone = [n for n in removals if sub.covers(n)]
                if ups or gone:
                    sent.append(stream.send(type_url, ups, gone))
        return sent

    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 - gRPC's name
        context.abort(12, "this control plane speaks incremental xDS only: set api_type DELTA_GRPC")  # UNIMPLEMENTED

    def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802 - gRPC's name
        stream = EnvoyStream(context.peer())
        with self._lock:
            self._streams.append(stream)
        reader = threading.Thread(target=self._read, args=(stream, request_iterator), daemon=True,
                                  name=f"ads-read-{stream.id}")
        reader.start()
        try:
            while True:
                item = stream.out.get()
                if item is _CLOSE:
                    return
                yield item
        finally:
            with self._lock:
                self._streams.remove(stream)
                for pending in stream.pending.values():
                    pending.error = "the Envoy disconnected before answering"
                    pending.done.set()
            LOG.info("Envoy %s (%s) disconnected", stream.node, stream.peer)

    def _read(self, stream: EnvoyStream, request_iterator) -> None:
        try:
            for request in request_iterator:
                self._handle(stream, request)
        except Exception as exc:  # noqa: BLE001 - a broken stream ends; Envoy reconnects
            LOG.info("stream %s ended: %s", stream.node, exc)
        finally:
            stream.out.put(_CLOSE)

    def _handle(self, stream: EnvoyStream, request) -> None:
        with self._lock:
            if request.node.id and stream.node.startswith("stream-"):
                stream.node = request.node.id
                LOG.info("Envoy %s connected from %s", stream.node, stream.peer)
            if request.response_nonce:
                pending = stream.pending.pop(request.response_nonce, None)
                if pending is not None:
                    if request.HasField("error_detail"):
                        pending.error = request.error_detail.message or "refused without a message"
                        stream.nacked += 1
                        LOG.warning("Envoy %s refused %s: %s", stream.node, request.type_url, pending.error)
                    else:
                        stream.acked += 1
                    pending.done.set()
            type_url = request.type_url
            subscribe = list(request.resource_names_subscribe)
            unsubscribe = set(request.resource_names_unsubscribe)
            sub = stream.subscriptions.get(type_url)
            if sub is None:
                # The first request of a type: no names (or "*") is a wildcard subscription.
                sub = Subscription(wildcard=not subscribe or "*" in subscribe, names=set(subscribe) - {"*"})
                stream.subscriptions[type_url] = sub
                have = dict(request.initial_resource_versions)
                stored = self.store.snapshot(type_url)
                ups = [r for n, r in sorted(stored.items()) if sub.covers(n) and have.get(n) != r.version]
                gone = sorted(n for n in have if n not in stored)
                stream.send(type_url, ups, gone)  # the first answer is sent even when empty
                return
            if "*" in subscribe:
                sub.wildcard = True
            if "*" in unsubscribe:
                sub.wildcard = False
            new = [n for n in subscribe if n != "*" and n not in sub.names]
            sub.names.update(new)
            sub.names -= unsubscribe
            if new:
                stored = self.store.snapshot(type_url)
                stream.send(type_url, [stored[n] for n in new if n in stored], [n for n in new if n not in stored])
