"""A slip-radio dongle and the 802.15.4 devices around it, simulated on a
serial line (one end of a pty pair), for the gateway's tests.

Written from the specifications, sharing nothing with the gateway's code:
SLIP (RFC 1055), IEEE 802.15.4-2006 data frames and the FCS (CRC-16/KERMIT),
CBOR (RFC 8949) and SenML-CBOR labels (RFC 8428), 6LoWPAN IPHC with UDP
next-header compression (RFC 6282), fragments (RFC 4944) and CoAP (RFC 7252).

    python3 radio_sim.py --port PATH [--fcs]

It answers slip-radio's `?M` with `!M` and its EUI-64, acknowledges each
`!S` with `!R` (status 0), and prints what the gateway sent:
    asked M
    command <device> <resource> <json value>      a compact command (0x02)
    coap <device> <type> <code> <mid> <path> <payload>   a 6LoWPAN/CoAP message
Commands on stdin, one per line:
    compact EUI64HEX RESOURCE VALUE               a compact SenML reading
    coap PAN SHORT PATH VALUE [con|non] [frag]    a CoAP POST over 6LoWPAN
    garbage                                        every kind of broken frame
    debug TEXT                                     slip-radio debug output
"""

import argparse
import json
import os
import struct
import sys
import termios
import threading
import tty

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
RADIO_EUI = bytes.fromhex("0212340000abcdef")
PAN = 0xABCD


def slip(frame):
    out = bytearray([END])
    for b in frame:
        if b == END:
            out += bytes([ESC, ESC_END])
        elif b == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(b)
    out.append(END)
    return bytes(out)


def crc16_kermit(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


# --- CBOR (RFC 8949), just what SenML needs --------------------------------

def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)


def cbor(value):
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return cbor_head(0, value) if value >= 0 else cbor_head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode()
        return cbor_head(3, len(data)) + data
    if isinstance(value, list):
        return cbor_head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return cbor_head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(value)


def senml_record(name, value):
    record = {0: name}  # n
    if isinstance(value, bool):
        record[4] = value  # vb
    elif isinstance(value, (int, float)):
        record[2] = float(value)  # v
    else:
        record[3] = str(value)  # vs
    return record


# --- IEEE 802.15.4 ---------------------------------------------------------

sequence = 0


def data_frame(source, payload, fcs):
    """2006 data frame, PAN id compression, to the gateway's short 0x0000.
    `source` is bytes: 2 (short) or 8 (extended, most significant first)."""
    global sequence
    sequence = (sequence + 1) & 0xFF
    source_mode = 2 if len(source) == 2 else 3
    control = 0x0001 | 1 << 6 | 2 << 10 | 1 << 12 | source_mode << 14
    frame = struct.pack("<HBHH", control, sequence, PAN, 0x0000) + bytes(reversed(source)) + payload
    if fcs:
        frame += struct.pack("<H", crc16_kermit(frame))
    return frame


# --- CoAP and 6LoWPAN ------------------------------------------------------

def coap_post(path, payload, confirmable, mid):
    kind = 0 if confirmable else 1
    token = b"\x42"
    out = bytearray([0x40 | kind << 4 | len(token), 0x02]) + struct.pack(">H", mid) + token
    last = 0
    for segment in path.strip("/").split("/"):
        data = segment.encode()
        delta = 11 - last
        last = 11
        out.append(delta << 4 | len(data))
        out += data
    out.append((12 - last) << 4)  # Content-Format (12), empty value: 0, text/plain
    out += b"\xff" + payload
    return bytes(out)


def iphc_udp(payload):
    # 011 TF=11 NH=1 HLIM=11 | SAM=11 DAM=11: addresses from the MAC header.
    # UDP NHC 11110 C=1 P=00 is not allowed without checksum; send it inline (C=0).
    header = bytes([0x7F, 0x33, 0xF0]) + struct.pack(">HH", 5683, 5683) + b"\x00\x00"
    return header + payload


# --- the line --------------------------------------------------------------

class Radio:
    def __init__(self, port, fcs):
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)  # keep what the gateway already sent
        self.fcs = fcs
        self.lock = threading.Lock()
        self.mid = 100

    def send(self, frame):
        with self.lock:
            os.write(self.fd, slip(frame))

    def frames(self):
        frame, escaped = bytearray(), False
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            for b in chunk:
                if b == END:
                    if frame:
                        yield bytes(frame)
                    frame = bytearray()
                elif b == ESC:
                    escaped = True
                elif escaped:
                    frame.append(END if b == ESC_END else ESC)
                    escaped = False
                else:
                    frame.append(b)

    def serve(self):
        for frame in self.frames():
            if frame[:2] == b"?M":
                self.send(b"!M" + RADIO_EUI)
                say("asked M")
            elif frame[:2] == b"!S":
                session, mac = frame[2], frame[3:]
                self.describe(mac)
                self.send(b"!R" + bytes([session, 0, 1]))

    def describe(self, mac):
        control, _sequence = struct.unpack("<HB", mac[:3])
        destination_mode = control >> 10 & 3
        source_mode = control >> 14 & 3
        at = 5  # control, sequence, PAN (compressed: one PAN)
        length = {2: 2, 3: 8}
        destination = bytes(reversed(mac[at:at + length[destination_mode]]))
        at += length[destination_mode] + length[source_mode]
        payload = mac[at:]
        device = destination.hex() if len(destination) == 8 else "%04x-%s" % (PAN, destination.hex())
        if payload[0] == 0x02:
            name, value = decode_command(payload[1:])
            say("command %s %s %s" % (device, name, json.dumps(value)))
        elif payload[0] >> 5 == 0b011:
            # Our sender's encoding only: 0x7E 0x33 0xF0 ports checksum.
            coap = payload[9:]
            kind = coap[0] >> 4 & 3
            tkl = coap[0] & 0xF
            code = "%d.%02d" % (coap[1] >> 5, coap[1] & 0x1F)
            mid = struct.unpack(">H", coap[2:4])[0]
            path, rest, last = [], coap[4 + tkl:], 0
            body = b""
            while rest:
                if rest[0] == 0xFF:
                    body = rest[1:]
                    break
                delta, size = rest[0] >> 4, rest[0] & 0xF
                last += delta
                if last == 11:
                    path.append(rest[1:1 + size].decode())
                rest = rest[1 + size:]
            say("coap %s %s %s %d /%s %s" % (device, ["CON", "NON", "ACK", "RST"][kind], code, mid, "/".join(path), body.decode() or "-"))

    def compact(self, eui, resource, value):
        pack = [senml_record(resource, value)]
        self.send(data_frame(bytes.fromhex(eui), b"\x01" + cbor(pack), self.fcs))

    def coap(self, pan, short, path, value, confirmable, fragment):
        self.mid += 1
        message = coap_post(path, str(value).encode(), confirmable, self.mid)
        source = struct.pack(">H", int(short, 16))
        datagram = iphc_udp(message)
        if not fragment:
            self.send(data_frame(source, datagram, self.fcs))
            return
        # Uncompressed size: 40 (IPv6) + 8 (UDP) + CoAP message.
        size = 48 + len(message)
        tag = self.mid
        compressed_headers = 9
        first_payload = 8 * 1  # 48 + 8 = 56 = 7 units of 8: first fragment ends there
        first = datagram[:compressed_headers + first_payload]
        rest = message[first_payload:]
        self.send(data_frame(source, struct.pack(">HH", 0xC000 | size, tag) + first, self.fcs))
        offset = (48 + first_payload) // 8
        self.send(data_frame(source, struct.pack(">HHB", 0xE000 | size, tag, offset) + rest, self.fcs))

    def garbage(self):
        good = data_frame(bytes.fromhex("00124b0000000001"), b"\x01" + cbor([senml_record("x", 1)]), True)
        bad_fcs = bytearray(good)
        bad_fcs[-1] ^= 0xFF
        frames = [
            bytes(bad_fcs) if self.fcs else good[:-2] + b"\x00",  # a bad FCS or a broken pack
            good[:4],  # truncated header
            data_frame(bytes.fromhex("00124b0000000001"), b"\x03junk", self.fcs),  # unknown dispatch
            data_frame(bytes.fromhex("00124b0000000001"), b"\x01\xff\xff", self.fcs),  # malformed CBOR
            data_frame(bytes.fromhex("00124b0000000001"), b"\x7f\x33", self.fcs),  # truncated IPHC
        ]
        with self.lock:
            for frame in frames:
                os.write(self.fd, slip(frame))
            os.write(self.fd, bytes([END, 1, 2, ESC, 0x42, 3, END]))  # a bad escape
            os.write(self.fd, bytes([END]) + bytes(3000) + bytes([END]))  # an oversized frame

    def debug(self, text):
        self.send(b"\r" + text.encode() + b"\n")


def decode_command(data):
    """Just enough CBOR to read [{0: name, 2|3|4: value}]."""
    pos = 0

    def item():
        nonlocal pos
        b = data[pos]
        pos += 1
        major, info = b >> 5, b & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 27:
                pos += 8
                return struct.unpack(">d", data[pos - 8:pos])[0]
            if info == 25:
                pos += 2
                return float(struct.unpack(">e", data[pos - 2:pos])[0])
            if info == 26:
                pos += 4
                return struct.unpack(">f", data[pos - 4:pos])[0]
        n = info
        if info == 24:
            n = data[pos]
            pos += 1
        elif info == 25:
            n = struct.unpack(">H", data[pos:pos + 2])[0]
            pos += 2
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 3:
            pos += n
            return data[pos - n:pos].decode()
        if major == 4:
            return [item() for _ in range(n)]
        if major == 5:
            return dict((item(), item()) for _ in range(n))
        raise ValueError("unexpected CBOR %x" % b)

    record = item()[0]
    value = record.get(2, record.get(3, record.get(4)))
    return record[0], value


def say(line):
    print(line, flush=True)


def parse_value(text):
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", required=True)
    parser.add_argument("--fcs", action="store_true")
    args = parser.parse_args()
    radio = Radio(args.port, args.fcs)
    say("ready")  # before anything the radio thread says
    threading.Thread(target=radio.serve, daemon=True).start()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "compact":
            radio.compact(words[1], words[2], parse_value(words[3]))
        elif words[0] == "coap":
            radio.coap(words[1], words[2], words[3], words[4], "non" not in words[5:], "frag" in words[5:])
        elif words[0] == "garbage":
            radio.garbage()
        elif words[0] == "debug":
            radio.debug(" ".join(words[1:]))
        say("done " + words[0])


if __name__ == "__main__":
    main()
