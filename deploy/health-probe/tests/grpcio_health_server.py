"""A grpc.health.v1 server from grpcio's reference implementation, for interop tests.

Usage: grpcio_health_server.py PORT_FILE

Serves on 127.0.0.1 at a free port, which it writes to PORT_FILE, with the overall
status SERVING, the service "up" SERVING and the service "down" NOT_SERVING. Runs until
killed.
"""

import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("up", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(sys.argv[1], "w") as f:
        f.write(str(port))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
