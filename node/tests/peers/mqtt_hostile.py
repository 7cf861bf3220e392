"""Hostile MQTT clients, written from the MQTT 3.1.1 and 5 specifications.

Usage: mqtt_hostile.py PORT CONNECTIONS SEED

Each connection sends a well-formed CONNECT (level 4 or 5, a client id from
a small set so that sessions are taken over) and then up to six packets
chosen at random: PUBLISHes with any QoS bits, retain and dup flags, odd
topics (wildcards, empty, `$SYS`) and MQTT 5 properties of every kind,
SUBSCRIBEs and UNSUBSCRIBEs with odd filters, and packets of any type
with random bodies. Then it says it is done sending and reads whatever
comes until the gateway closes or 50 ms pass.
The same seed sends the same bytes. Prints `done N` at the end.
"""

import random
import socket
import struct
import sys


def varint(value):
    out = b""
    while True:
        byte, value = value % 128, value // 128
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def string(data):
    return struct.pack(">H", len(data)) + data


def connect(rnd, level, client_id):
    header = string(b"MQTT") + bytes([level, rnd.choice([0x00, 0x02])]) + struct.pack(">H", 30)
    if level == 5:
        header += b"\x00"
    body = header + string(client_id)
    return b"\x10" + varint(len(body)) + body


def properties(rnd):
    if rnd.random() < 0.5:
        return b"\x00"
    out = b""
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.choice(
            [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x1F, 0x21, 0x22, 0x23, 0x26, rnd.randint(0, 255)]
        )
        if kind == 0x26:
            out += bytes([kind]) + string(b"k") + string(b"v")
        elif kind in (0x03, 0x08, 0x1F):
            out += bytes([kind]) + string(rnd.choice([b"text/plain", b"a/#", b""]))
        elif kind == 0x09:
            out += bytes([kind]) + string(bytes(rnd.randint(0, 255) for _ in range(3)))
        elif kind in (0x21, 0x22, 0x23):
            out += bytes([kind]) + struct.pack(">H", rnd.randint(0, 3))
        elif kind in (0x02, 0x11):
            out += bytes([kind]) + struct.pack(">I", rnd.randint(0, 5))
        elif kind == 0x0B:
            out += bytes([kind]) + varint(rnd.randint(0, 3))
        else:
            out += bytes([kind, rnd.randint(0, 2)])
    return varint(len(out)) + out


def packet(rnd, level):
    kind = rnd.randint(0, 15)
    topic = rnd.choice(
        [b"things/h-1/level", b"things/#", b"things/+/level", b"", b"$SYS/x", b"things/h-2", b"#", b"a\x00b"]
    )
    packet_id = struct.pack(">H", rnd.randint(0, 3))
    props = properties(rnd) if level == 5 else b""
    roll = rnd.random()
    if kind == 3 or roll < 0.3:
        qos = rnd.randint(0, 3)
        flags = (qos << 1) | rnd.randint(0, 1) | (rnd.randint(0, 1) << 3)
        payload = rnd.choice([b"1", b"", b'{"x":', b"2.5", b'[{"n":"t","v":1}]'])
        body = string(topic) + (packet_id if qos else b"") + props + payload
        return bytes([0x30 | flags]) + varint(len(body)) + body
    if kind == 8 or roll < 0.45:
        options = rnd.randint(0, 255) if rnd.random() < 0.2 else rnd.randint(0, 2)
        body = packet_id + props + string(topic) + bytes([options])
        return b"\x82" + varint(len(body)) + body
    if kind == 10 or roll < 0.5:
        body = packet_id + props + string(topic)
        return b"\xa2" + varint(len(body)) + body
    body = bytes(rnd.randint(0, 255) for _ in range(rnd.choice([0, 1, 2, 3, 4, 8, 20])))
    flags = rnd.choice([0, 2, rnd.randint(0, 15)])
    return bytes([(kind << 4) | flags]) + varint(len(body)) + body


def main():
    port, connections, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rnd = random.Random(seed)
    for _ in range(connections):
        level = rnd.choice([4, 5])
        client_id = rnd.choice([b"h1", b"h2", b"h3", b""])
        data = connect(rnd, level, client_id) + b"".join(packet(rnd, level) for _ in range(rnd.randint(0, 6)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(0.05)
                while sock.recv(4096):
                    pass
        except OSError:
            pass  # closed first, or still open after 50 ms: both are its right
    print("done", connections)


if __name__ == "__main__":
    main()
