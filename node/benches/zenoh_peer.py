"""One Zenoh node of the cross-gateway benchmark (node/benches/cloud.rs).

    zenoh_peer.py sub ENDPOINT COUNT OUT [client] [persist=FILE]
                                           records (seq, ns) per sample; with
                                           persist, appends each sample to
                                           FILE (one write, no fsync) before
                                           it counts
    zenoh_peer.py pub ENDPOINT COUNT OUT INTERVAL_US [client]
                                           puts COUNT payloads (the sequence
                                           number as text), one every
                                           INTERVAL_US (0: back to back),
                                           records (seq, ns) before each put
    zenoh_peer.py router LISTEN [CONNECT]  a router (a gateway), until killed

Two topologies. Peer to peer: the subscriber listens on ENDPOINT and the
publisher connects to it, nothing between them. Through two routers (the
topology of the gateways): with `client`, publisher and subscriber are
clients of a router each, the two routers joined.

Times are CLOCK_MONOTONIC nanoseconds (time.monotonic_ns), shared by both
processes on one host. Multicast scouting is off: peers meet only at the
given loopback endpoint. Puts block rather than drop under congestion, as
an MQTT QoS 1 publisher would.
"""

import json
import os
import sys
import threading
import time

import zenoh

KEY = "bench/level"


def session(mode, listen=None, connect=None):
    config = zenoh.Config()
    config.insert_json5("mode", json.dumps(mode))
    config.insert_json5("scouting/multicast/enabled", "false")
    if listen:
        config.insert_json5("listen/endpoints", json.dumps([listen]))
    if connect:
        config.insert_json5("connect/endpoints", json.dumps([connect]))
    return zenoh.open(config)


def endpoint_session(role, endpoint, client):
    if client:
        return session("client", connect=endpoint)
    if role == "sub":
        return session("peer", listen=endpoint)
    return session("peer", connect=endpoint)


def route(listen, connect):
    with session("router", listen=listen, connect=connect):
        print("ready", flush=True)
        threading.Event().wait()


def subscribe(endpoint, count, out, client, persist):
    received = []
    done = threading.Event()
    store = os.open(persist, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if persist else None

    def on_sample(sample):
        text = sample.payload.to_string()
        if store is not None:
            os.write(store, f"{text}\n".encode())
        received.append((int(text), time.monotonic_ns()))
        if len(received) >= count:
            done.set()

    with endpoint_session("sub", endpoint, client) as s:
        subscriber = s.declare_subscriber(KEY, on_sample)
        print("ready", flush=True)
        done.wait(timeout=120)
        subscriber.undeclare()
    with open(out, "w") as f:
        f.writelines(f"{seq} {ns}\n" for seq, ns in received)


def publish(endpoint, count, out, interval_us, client):
    sent = []
    with endpoint_session("pub", endpoint, client) as s:
        publisher = s.declare_publisher(
            KEY, congestion_control=zenoh.CongestionControl.BLOCK
        )
        # Wait until the subscriber is known: nothing may go to nobody.
        deadline = time.monotonic() + 10
        while not publisher.matching_status.matching and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic_ns()
        for seq in range(count):
            if interval_us:
                due = start + seq * interval_us * 1000
                while time.monotonic_ns() < due:
                    pass
            sent.append((seq, time.monotonic_ns()))
            publisher.put(str(seq))
        time.sleep(1)
    with open(out, "w") as f:
        f.writelines(f"{seq} {ns}\n" for seq, ns in sent)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "router":
        route(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif role == "sub":
        endpoint, count, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        flags = sys.argv[5:]
        persist = next((f.removeprefix("persist=") for f in flags if f.startswith("persist=")), None)
        subscribe(endpoint, count, out, "client" in flags, persist)
    else:
        endpoint, count, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        publish(endpoint, count, out, int(sys.argv[5]), sys.argv[6:] == ["client"])
