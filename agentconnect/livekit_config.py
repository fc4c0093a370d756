"""The one writer of livekit-server configuration files for this machine (the demo, the test
services, the fault and multi-node tests).

Every node listens and advertises on loopback only and never asks a public STUN
server. Nodes given the same Redis form one LiveKit cluster: rooms and agent
jobs are routed between them. Also a command, for the shell scripts:

    python -m agentconnect.livekit_config --port 7880 --key devkey --secret S \
        --webhook-url http://127.0.0.1:8000/api/v1/livekit-agents/webhook [--redis 127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeConfig:
    port: int
    key: str
    secret: str
    webhook_urls: tuple[str, ...] = ()
    # RTC ports: port+1 (TCP) and port+2 (UDP) unless given
    rtc_tcp_port: int = 0
    rtc_udp_port: int = 0
    # "host:port" of the Redis the nodes of one cluster share; empty: a single node
    redis_address: str = ""
    redis_db: int = 0
    log_level: str = "info"
    development: bool = False
    # short, so rooms a test abandons go away (room_finished) quickly; 0: LiveKit's defaults
    empty_timeout: int = 0
    departure_timeout: int = 0

    @property
    def tcp(self) -> int:
        return self.rtc_tcp_port or self.port + 1

    @property
    def udp(self) -> int:
        return self.rtc_udp_port or self.port + 2

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def _q(value: str) -> str:
    # JSON strings are valid YAML scalars: no quoting rules of our own
    return json.dumps(value)


def render(node: NodeConfig) -> str:
    lines = [
        "# written by agentconnect/livekit_config.py; loopback only",
        f"port: {node.port}",
        "bind_addresses: [127.0.0.1]",
        f"log_level: {node.log_level}",
    ]
    if node.development:
        lines.append("development: true")
    lines += [
        "rtc:",
        f"  tcp_port: {node.tcp}",
        f"  udp_port: {node.udp}",
        "  # never ask a public STUN server; advertise and listen on loopback only",
        "  use_external_ip: false",
        "  node_ip: 127.0.0.1",
        "  enable_loopback_candidate: true",
        "  ips:",
        "    includes: [127.0.0.1/32]",
        "keys:",
        f"  {_q(node.key)}: {_q(node.secret)}",
    ]
    if node.redis_address:
        lines += ["redis:", f"  address: {_q(node.redis_address)}", f"  db: {node.redis_db}"]
    if node.webhook_urls:
        lines += [
            "webhook:",
            f"  api_key: {_q(node.key)}",
            f"  urls: [{', '.join(_q(url) for url in node.webhook_urls)}]",
        ]
    if node.empty_timeout or node.departure_timeout:
        lines.append("room:")
        if node.empty_timeout:
            lines.append(f"  empty_timeout: {node.empty_timeout}")
        if node.departure_timeout:
            lines.append(f"  departure_timeout: {node.departure_timeout}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a loopback livekit-server configuration.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtc-tcp-port", type=int, default=0)
    parser.add_argument("--rtc-udp-port", type=int, default=0)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--webhook-url", action="append", default=[])
    parser.add_argument("--redis", default="", help="host:port of the cluster's Redis")
    parser.add_argument("--redis-db", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--development", action="store_true")
    parser.add_argument("--empty-timeout", type=int, default=0)
    parser.add_argument("--departure-timeout", type=int, default=0)
    args = parser.parse_args(argv)
    node = NodeConfig(
        port=args.port,
        rtc_tcp_port=args.rtc_tcp_port,
        rtc_udp_port=args.rtc_udp_port,
        key=args.key,
        secret=args.secret,
        webhook_urls=tuple(args.webhook_url),
        redis_address=args.redis,
        redis_db=args.redis_db,
        log_level=args.log_level,
        development=args.development,
        empty_timeout=args.empty_timeout,
        departure_timeout=args.departure_timeout,
    )
    sys.stdout.write(render(node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
