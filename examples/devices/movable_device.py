"""A CoAP device that a fogbank gateway can move to another gateway.

A reference for device makers, written from the LWM2M 1.1 and CoRE
Resource Directory (RFC 9176) specifications with aiocoap; fogbank's own
tests run it. It registers at a resource directory with IPSO objects 3303
(temperature, /3303/0/5700) and 3311 (light control, /3311/0/5850), the
Device object 3 (/3/0: who made it and what firmware it runs, which the
gateway reads at every registration and shows in the thing services'
`metadata.device`), and the Transport Management Policy object 31024 —
which is what makes it movable (docs/lwm2m/31024.xml defines the object):

    </3/0>,</3303/0>,</3311/0>,</31024/0>

When the gateway writes /31024/0 (PUT, SenML JSON or OMA-TLV) with a
service name (0), an address (1), a port (2) and a protocol (3), the device
answers 2.04 Changed, deletes its registration at the old directory, and
registers at coap://{address}:{port} with the same endpoint name. It keeps
its values, and the lamp its state.

    python3 movable_device.py --rd coap://127.0.0.1:5683 --ep NAME --port P
        [--lifetime SECS] [--interval SECS] [--tlv-only]

The temperature starts at 20.0 and rises by 0.01 every interval, so each
value is told apart; each is a notification to observers. It prints one
line per event: "registered at HOST:PORT", "policy SERVICE HOST:PORT
PROTOCOL", "lamp on|off". With --tlv-only the policy object answers 4.15 to
anything but OMA-TLV, as a constrained device might.
"""

import argparse
import asyncio
import json
import logging

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.resourcedirectory.client.register import Registerer

SENML_JSON = 110
TLV = 11542
TEXT = 0


class Temperature(resource.ObservableResource):
    """/3303/0/5700 (Sensor Value), plain text."""

    def __init__(self):
        super().__init__()
        self.value = 20.0

    def step(self):
        self.value = round(self.value + 0.01, 2)
        self.updated_state()

    async def render_get(self, request):
        return aiocoap.Message(payload=f"{self.value:.2f}".encode(), content_format=TEXT)


class Lamp(resource.ObservableResource):
    """/3311/0/5850 (On/Off): LWM2M plain text writes 1 or 0."""

    def __init__(self):
        super().__init__()
        self.on = False

    async def render_get(self, request):
        return aiocoap.Message(payload=b"1" if self.on else b"0", content_format=TEXT)

    async def render_put(self, request):
        text = request.payload.decode(errors="replace").strip().lower()
        if text not in ("1", "0", "true", "false"):
            return aiocoap.Message(code=aiocoap.BAD_REQUEST)
        self.on = text in ("1", "true")
        print(f"lamp {'on' if self.on else 'off'}", flush=True)
        self.updated_state()
        return aiocoap.Message(code=aiocoap.CHANGED)


class DeviceObject(resource.Resource):
    """/3/0: manufacturer (0), model number (1), serial number (2) and
    firmware version (3), strings, as OMA-TLV (LWM2M 1.0, 6.4.3, and
    appendix E.4)."""

    def __init__(self, serial):
        super().__init__()
        self.strings = {0: "Fogbank examples", 1: "movable-device", 2: serial, 3: "1.0"}

    async def render_get(self, request):
        # Type 11 (resource), 8-bit id, 8-bit length, then the value.
        body = b"".join(
            bytes([0xC8, rid, len(text.encode())]) + text.encode() for rid, text in self.strings.items()
        )
        return aiocoap.Message(payload=body, content_format=TLV)


def decode_tlv(data):
    """OMA-TLV (LWM2M 1.0, 6.4.3): {resource id: bytes}, one level of
    resources, optionally inside one object-instance TLV."""
    out = {}
    at = 0
    while at < len(data):
        kind = data[at]
        at += 1
        id_len = 2 if kind & 0x20 else 1
        ident = int.from_bytes(data[at:at + id_len], "big")
        at += id_len
        length_len = (kind >> 3) & 0x3
        if length_len == 0:
            length = kind & 0x7
        else:
            length = int.from_bytes(data[at:at + length_len], "big")
            at += length_len
        value = data[at:at + length]
        if len(value) != length:
            raise ValueError("truncated TLV")
        at += length
        if kind >> 6 == 0:  # object instance: its resources inside
            out.update(decode_tlv(value))
        elif kind >> 6 == 3:
            out[ident] = value
    return out


def tlv_integer(value):
    return int.from_bytes(value, "big", signed=True)


def decode_senml(data):
    """SenML JSON (RFC 8428) as LWM2M 1.1 writes an instance: names are
    resource ids below the base name /31024/0/."""
    out = {}
    base = ""
    for record in json.loads(data):
        base = record.get("bn", base)
        name = base + record.get("n", "")
        resource_id = int(name.rstrip("/").rsplit("/", 1)[-1])
        if "vs" in record:
            out[resource_id] = record["vs"]
        elif "v" in record:
            out[resource_id] = record["v"]
    return out


class TransportPolicy(resource.Resource):
    """/31024/0: where to register. Written whole by the gateway."""

    def __init__(self, device, tlv_only):
        super().__init__()
        self.device = device
        self.tlv_only = tlv_only
        self.policy = None

    async def render_get(self, request):
        return aiocoap.Message(payload=json.dumps(self.policy).encode(), content_format=50)

    async def render_put(self, request):
        fmt = request.opt.content_format
        fmt = int(fmt) if fmt is not None else None
        try:
            if fmt == TLV:
                raw = decode_tlv(request.payload)
                policy = {
                    "service": raw.get(0, b"").decode(),
                    "address": raw[1].decode(),
                    "port": tlv_integer(raw[2]),
                    "protocol": raw.get(3, b"coap").decode(),
                }
            elif fmt == SENML_JSON and not self.tlv_only:
                raw = decode_senml(request.payload)
                policy = {
                    "service": raw.get(0, ""),
                    "address": raw[1],
                    "port": int(raw[2]),
                    "protocol": raw.get(3, "coap"),
                }
            else:
                return aiocoap.Message(code=aiocoap.UNSUPPORTED_CONTENT_FORMAT)
        except (KeyError, ValueError, UnicodeDecodeError):
            return aiocoap.Message(code=aiocoap.BAD_REQUEST)
        if policy["protocol"] != "coap":
            return aiocoap.Message(code=aiocoap.NOT_ACCEPTABLE)
        self.policy = policy
        print(f"policy {policy['service']} {policy['address']}:{policy['port']} {policy['protocol']}", flush=True)
        # Answer first; move after.
        asyncio.get_running_loop().call_soon(self.device.move_to, policy["address"], policy["port"])
        return aiocoap.Message(code=aiocoap.CHANGED)


class Device:
    def __init__(self, context, ep, lifetime):
        self.context = context
        self.ep = ep
        self.lifetime = lifetime
        self.registerer = None
        self.rd = None

    def register(self, rd):
        self.rd = rd
        self.registerer = Registerer(
            self.context,
            rd=rd,
            lt=self.lifetime,
            registration_parameters={"ep": self.ep, "lwm2m": "1.1"},
        )

    def move_to(self, host, port):
        old = self.registerer
        host = f"[{host}]" if ":" in host else host
        self.register(f"coap://{host}:{port}")
        # The old directory forgets us. A gateway that moved us has let go
        # already and answers 4.04, which is no error here.
        old.log = logging.getLogger("movable-device.left-directory")
        old.log.setLevel(logging.CRITICAL)
        asyncio.ensure_future(old.shutdown())

    @property
    def registered(self):
        return self.registerer is not None and self.registerer.state == "registered"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rd", required=True)
    parser.add_argument("--ep", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--tlv-only", action="store_true")
    args = parser.parse_args()

    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    temperature = Temperature()
    site.add_resource(["3303", "0", "5700"], temperature)
    site.add_resource(["3311", "0", "5850"], Lamp())
    site.add_resource(["3", "0"], DeviceObject(serial=args.ep))
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", args.port))
    device = Device(context, args.ep, args.lifetime)
    site.add_resource(["31024", "0"], TransportPolicy(device, args.tlv_only))
    device.register(args.rd)

    announced = None
    while True:
        await asyncio.sleep(args.interval)
        temperature.step()
        if device.registered and announced != device.rd:
            announced = device.rd
            print(f"registered at {device.rd.removeprefix('coap://')}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
