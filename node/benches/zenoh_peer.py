"""One Zenoh peer of the cross-gateway benchmark (node/benches/cloud.rs).

    zenoh_peer.py sub ENDPOINT COUNT OUT   listens, records (seq, ns) per sample
    zenoh_peer.py pub ENDPOINT COUNT OUT INTERVAL_US
                                           connects, puts COUNT payloads
                                           (the sequence number as text), one
                                           every INTERVAL_US (0: back to back),
                                           records (seq, ns) before each put

Times are CLOCK_MONOTONIC nanoseconds (time.monotonic_ns), shared by both
processes on one host. Multicast scouting is off: peers meet only at the
given loopback endpoint. Puts block rather than drop under congestion, as
an MQTT QoS 1 publisher would.
"""

import json
import sys
import threading
import time

import zenoh

KEY = "bench/level"


def session(role, endpoint):
    config = zenoh.Config()
    config.insert_json5("mode", '"peer"')
    config.insert_json5("scouting/multicast/enabled", "false")
    side = "listen" if role == "sub" else "connect"
    config.insert_json5(f"{side}/endpoints", json.dumps([endpoint]))
    return zenoh.open(config)


def subscribe(endpoint, count, out):
    received = []
    done = threading.Event()

    def on_sample(sample):
        received.append((int(sample.payload.to_string()), time.monotonic_ns()))
        if len(received) >= count:
            done.set()

    with session("sub", endpoint) as s:
        subscriber = s.declare_subscriber(KEY, on_sample)
        print("ready", flush=True)
        done.wait(timeout=120)
        subscriber.undeclare()
    with open(out, "w") as f:
        f.writelines(f"{seq} {ns}\n" for seq, ns in received)


def publish(endpoint, count, out, interval_us):
    sent = []
    with session("pub", endpoint) as s:
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
    role, endpoint, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if role == "sub":
        subscribe(endpoint, count, out)
    else:
        publish(endpoint, count, out, int(sys.argv[5]))
