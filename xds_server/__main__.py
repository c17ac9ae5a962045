"""`python -m xds_server --state-dir DIR --grpc-port N --http-port M`: serve until stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

# The message types the router sends, and those nested in them as Any (registered on import).
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2, scoped_route_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc

from xds_server.ads import DeltaAds
from xds_server.api import ControlPlane, make_http_server
from xds_server.store import ResourceStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xds_server", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path, help="where the resources are kept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", required=True, type=int, help="ADS for Envoy")
    parser.add_argument("--http-port", required=True, type=int, help="the change API for the router")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    store = ResourceStore(args.state_dir)
    ads = DeltaAds(store)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="ads"))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, grpc_server)
    grpc_server.add_insecure_port(f"{args.host}:{args.grpc_port}")
    http_server = make_http_server(ControlPlane(store, ads), args.host, args.http_port)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    grpc_server.start()
    threading.Thread(target=http_server.serve_forever, daemon=True, name="http").start()
    logging.info("serving %d resources: ADS on %s:%d, changes on http://%s:%d", sum(
        len(store.snapshot(t)) for t in store.types()), args.host, args.grpc_port, args.host, args.http_port)
    stop.wait()
    http_server.shutdown()
    grpc_server.stop(grace=1.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
