"""MQTT behaviours the specifications define, driven with paho-mqtt against
one broker, each reduced to what a client observes; printed as one JSON
object. node/tests/mqtt_conformance.rs runs it against Mosquitto and the
embedded broker and compares the two.

    python3 mqtt_conformance.py --port P --version 4|5 [--only a,b]

MQTT 3.1.1 (version 4) and MQTT 5 (version 5): sessions, retained
messages, wills, QoS flows, subscriptions, unsubscribing, keep-alive, and
for MQTT 5 the subscription options and message expiry. Topics live under
a prefix of their own per run, so that a broker's retained messages from
an earlier run do not show.
"""

import argparse
import json
import queue
import socket
import struct
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

QUIET = 0.7  # seconds to wait for something that should not come


class Client:
    """A paho client that collects what it receives."""

    def __init__(self, args, name, clean=True, will=None, keepalive=60, expiry=None):
        self.version = args.version
        protocol = mqtt.MQTTv5 if args.version == 5 else mqtt.MQTTv311
        self.id = f"{args.prefix}-{name}"
        kwargs = {} if args.version == 5 else {"clean_session": clean}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.id, protocol=protocol, **kwargs
        )
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, props=None: self.connacks.put(
            (flags.session_present, rc.value if hasattr(rc, "value") else rc)
        )
        if will:
            self.client.will_set(*will)
        self.client.connect_async(
            "127.0.0.1",
            args.port,
            keepalive=keepalive,
            **self.connect_options(clean, expiry),
        )
        self.client.loop_start()
        self.session_present, _ = self.connacks.get(timeout=5)

    def connect_options(self, clean, expiry):
        if self.version != 5:
            return {}
        properties = Properties(PacketTypes.CONNECT)
        if expiry is not None:
            properties.SessionExpiryInterval = expiry
        return {"clean_start": clean, "properties": properties}

    def subscribe(self, topic, qos=1, **options):
        done = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, props=None: done.put(
            [getattr(code, "value", code) for code in codes]
        )
        if self.version == 5:
            self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
        else:
            self.client.subscribe(topic, qos)
        return done.get(timeout=5)

    def unsubscribe(self, topic):
        done = queue.Queue()
        self.client.on_unsubscribe = lambda *a: done.put(True)
        self.client.unsubscribe(topic)
        done.get(timeout=5)

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=5)
        return info.is_published()

    def received(self, wait=QUIET):
        """(topic, payload, qos, retain) of what arrives within `wait` s of the last."""
        got = []
        while True:
            try:
                m = self.messages.get(timeout=wait)
            except queue.Empty:
                return got
            got.append([m.topic, m.payload.decode(errors="replace"), m.qos, int(m.retain)])

    def drop(self):
        """Goes away without DISCONNECT: the socket just closes."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def retained(args, t):
    publisher = Client(args, "ret-pub")
    live = Client(args, "ret-live")
    live.subscribe(f"{t}/ret")
    publisher.publish(f"{t}/ret", "v1", retain=True)
    seen = {"live": live.received()}
    late = Client(args, "ret-late-1")
    late.subscribe(f"{t}/ret")
    seen["late"] = late.received()
    # Subscribing again to the same filter sends the retained message again.
    late.subscribe(f"{t}/ret")
    seen["again"] = late.received()
    publisher.publish(f"{t}/ret", "v2", retain=True)
    publisher.publish(f"{t}/ret", "", retain=True)
    cleared = Client(args, "ret-late-2")
    cleared.subscribe(f"{t}/+")
    seen["after_clear"] = cleared.received()
    for c in (publisher, live, late, cleared):
        c.close()
    return seen


def wills(args, t):
    watcher = Client(args, "will-watch")
    watcher.subscribe(f"{t}/will/#")
    dropped = Client(args, "will-drop", will=(f"{t}/will/drop", "gone", 1, False))
    polite = Client(args, "will-polite", will=(f"{t}/will/polite", "gone", 1, False))
    polite.close()
    dropped.drop()
    seen = watcher.received(wait=3)
    watcher.close()
    return seen


def qos(args, t):
    subscriber = Client(args, "qos-sub")
    granted = subscriber.subscribe(f"{t}/q", qos=1)
    publisher = Client(args, "qos-pub")
    acknowledged = [publisher.publish(f"{t}/q", str(q), qos=q) for q in (0, 1, 2)]
    seen = subscriber.received()
    seen.sort(key=lambda m: m[1])
    sub2 = Client(args, "qos-sub2")
    sub2.subscribe(f"{t}/q2", qos=2)
    publisher.publish(f"{t}/q2", "exactly-once", qos=2)
    once = sub2.received()
    for c in (subscriber, publisher, sub2):
        c.close()
    return {"granted": granted, "acknowledged": acknowledged, "received": seen, "qos2": once}


def sessions(args, t):
    publisher = Client(args, "sess-pub")
    first = Client(args, "sess", clean=False, expiry=300)
    outcome = {"first_session_present": first.session_present}
    first.subscribe(f"{t}/s")
    first.close()
    for n in (1, 2, 3):
        publisher.publish(f"{t}/s", str(n))
    back = Client(args, "sess", clean=False, expiry=300)
    outcome["resumed_session_present"] = back.session_present
    outcome["queued"] = back.received()
    back.close()
    fresh = Client(args, "sess", clean=True)
    outcome["clean_session_present"] = fresh.session_present
    publisher.publish(f"{t}/s", "after-clean")
    outcome["after_clean"] = fresh.received()
    fresh.close()
    publisher.close()
    return outcome


def subscriptions(args, t):
    subscriber = Client(args, "sub")
    subscriber.subscribe(f"{t}/w/+/x")
    subscriber.subscribe(f"{t}/w/#")
    publisher = Client(args, "sub-pub")
    for topic in (f"{t}/w/a/x", f"{t}/w/a/b/c", f"{t}/w", f"{t}/other"):
        publisher.publish(topic, "m")
    seen = sorted(m[0].removeprefix(t) for m in subscriber.received())
    subscriber.unsubscribe(f"{t}/w/#")
    subscriber.unsubscribe(f"{t}/w/+/x")
    publisher.publish(f"{t}/w/a/x", "after")
    after = subscriber.received()
    # Filters that start with a wildcard do not match topics that start with $.
    dollar = Client(args, "sub-dollar")
    dollar.subscribe("#")
    dollar.subscribe("+/conformance")
    publisher.publish("$fogbank-conformance/x", "m")
    publisher.publish("$fogbank/conformance", "m")
    dollar_seen = [m[0] for m in dollar.received() if "conformance" in m[0] and m[0].startswith("$")]
    for c in (subscriber, publisher, dollar):
        c.close()
    return {"wildcards": seen, "after_unsubscribe": after, "dollar": dollar_seen}


def keepalive(args, t):
    """A client that promised a 1 s keep-alive and then says nothing is
    disconnected: the specification says after one and a half times that;
    Mosquitto looks every few seconds, so within 10 s counts."""
    sock = socket.create_connection(("127.0.0.1", args.port))
    client_id = f"{args.prefix}-ka".encode()
    body = b"\x00\x04MQTT" + bytes([args.version, 0x02]) + struct.pack(">H", 1)
    if args.version == 5:
        body += b"\x00"
    body += struct.pack(">H", len(client_id)) + client_id
    sock.sendall(bytes([0x10, len(body)]) + body)
    sock.settimeout(12)
    connack = sock.recv(4)
    started = time.monotonic()
    try:
        while sock.recv(64):
            pass
        closed_after = time.monotonic() - started
    except socket.timeout:
        closed_after = None
    sock.close()
    return {
        "connack": connack[0] == 0x20,
        "closed": closed_after is not None and closed_after < 10.0,
    }


def v5_options(args, t):
    client = Client(args, "v5")
    client.subscribe(f"{t}/nl", noLocal=True)
    client.publish(f"{t}/nl", "mine")
    no_local = client.received()
    other = Client(args, "v5-other")
    other.subscribe(f"{t}/rap", retainAsPublished=True)
    other.subscribe(f"{t}/norap")
    client.publish(f"{t}/rap", "r", retain=True)
    client.publish(f"{t}/norap", "r", retain=True)
    rap = sorted(other.received())
    late = Client(args, "v5-late")
    late.subscribe(f"{t}/rap", retainHandling=2)
    no_retained = late.received()
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = ("site", "north")
    other.subscribe(f"{t}/props")
    client.publish(f"{t}/props", "p", properties=properties)
    got = other.messages.get(timeout=5)
    user = getattr(got.properties, "UserProperty", None)
    # A message that expires while its subscriber is away is not delivered.
    away = Client(args, "v5-away", clean=False, expiry=300)
    away.subscribe(f"{t}/exp")
    away.close()
    expiring = Properties(PacketTypes.PUBLISH)
    expiring.MessageExpiryInterval = 1
    client.publish(f"{t}/exp", "expires", properties=expiring)
    client.publish(f"{t}/exp", "stays")
    time.sleep(2.2)
    back = Client(args, "v5-away", clean=False, expiry=300)
    expired = [m[1] for m in back.received()]
    for c in (client, other, late, back):
        c.close()
    publisher_cleanup = Client(args, "v5-clean")
    publisher_cleanup.publish(f"{t}/rap", "", retain=True)
    publisher_cleanup.publish(f"{t}/norap", "", retain=True)
    publisher_cleanup.close()
    return {
        "no_local": no_local,
        "retain_as_published": rap,
        "retain_handling_2": no_retained,
        "user_property": user,
        "expiry": expired,
    }


SCENARIOS = {
    "retained": retained,
    "wills": wills,
    "qos": qos,
    "sessions": sessions,
    "subscriptions": subscriptions,
    "keepalive": keepalive,
}
V5_SCENARIOS = {"v5_options": v5_options}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", type=int, choices=(4, 5), required=True)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    args.prefix = f"conf-{uuid.uuid4().hex[:8]}"
    scenarios = dict(SCENARIOS)
    if args.version == 5:
        scenarios.update(V5_SCENARIOS)
    only = [s for s in args.only.split(",") if s]
    results = {}
    for name, scenario in scenarios.items():
        if only and name not in only:
            continue
        try:
            results[name] = scenario(args, f"{args.prefix}/{name}")
        except Exception as error:  # a broker that never answers, say
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
