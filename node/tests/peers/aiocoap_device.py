"""A CoAP device written with aiocoap, as a vendor would: it serves an
observable temperature and a lamp that takes PUT, and keeps itself
registered at a resource directory with aiocoap's own RFC 9176 client.

    python3 aiocoap_device.py --rd coap://127.0.0.1:5683 --ep NAME --port P
        [--lifetime SECS] [--interval SECS] [--lwm2m [--senml]]
        [--deregister-after SECS]

With --lwm2m it is an LWM2M-style device instead: IPSO objects 3303
(temperature, value resource 5700 answered in OMA-TLV) and 3311 (light
control, on/off resource 5850) and the Device object 3 (/3/0: manufacturer
"Aiocoap Works", model "AD-{ep}", serial "SN-{port}", firmware "1.0.7"),
registered with `lwm2m=1.1`. With --senml its temperature and device
object answer in SenML JSON the way LWM2M 1.1 and Leshan write them,
naming resources by path: [{"bn":"/3303/0/","n":"5700","v":…}]; without,
in OMA-TLV. It prints "device info read" when /3/0 is read.

The temperature starts at 20.0 and rises by 0.5 every interval; each value
is a notification to observers. It prints "registered" once the directory
has accepted it, and "temperature observers N" whenever the number of
its observers changes. With --deregister-after it deletes its registration
that long after registering (printing "deregistered") and runs on.
"""

import argparse
import asyncio
import json
import struct

import aiocoap
import aiocoap.resource as resource
from aiocoap.resourcedirectory.client.register import Registerer


class Temperature(resource.ObservableResource):
    rt = "temperature"
    if_ = "core.s"
    ct = 0

    def __init__(self):
        super().__init__()
        self.value = 20.0

    def step(self):
        self.value += 0.5
        self.updated_state()

    def update_observation_count(self, newcount):
        print(f"temperature observers {newcount}", flush=True)

    async def render_get(self, request):
        return aiocoap.Message(payload=f"{self.value:.1f}".encode(), content_format=0)


class IpsoTemperature(Temperature):
    """/3303/0/5700 in OMA-TLV: a resource TLV with a 16-bit id."""

    ct = 11542

    async def render_get(self, request):
        tlv = bytes([0xE4]) + struct.pack(">H", 5700) + struct.pack(">f", self.value)
        return aiocoap.Message(payload=tlv, content_format=11542)


class SenmlIpsoTemperature(Temperature):
    """/3303/0/5700 in SenML JSON, named by its LWM2M path."""

    ct = 110

    async def render_get(self, request):
        pack = f'[{{"bn":"/3303/0/","n":"5700","v":{self.value:.1f}}}]'
        return aiocoap.Message(payload=pack.encode(), content_format=110)


class DeviceObject(resource.Resource):
    """/3/0, the LWM2M Device object: resources 0-3 are strings (LWM2M
    1.0, appendix E.4); 9, the battery level, an integer."""

    def __init__(self, strings, senml):
        super().__init__()
        self.strings = strings
        self.senml = senml

    async def render_get(self, request):
        print("device info read", flush=True)
        if self.senml:
            records = [{"bn": "/3/0/", "n": "0", "vs": self.strings[0]}]
            records += [{"n": str(rid), "vs": text} for rid, text in enumerate(self.strings) if rid]
            records.append({"n": "9", "v": 87})
            return aiocoap.Message(payload=json.dumps(records).encode(), content_format=110)
        # Resource TLVs: type 11, 8-bit id, 8-bit length (LWM2M 1.0, 6.4.3).
        body = b"".join(
            bytes([0xC8, rid, len(text.encode())]) + text.encode() for rid, text in enumerate(self.strings)
        )
        body += bytes([0xC1, 9, 87])
        return aiocoap.Message(payload=body, content_format=11542)


class Lamp(resource.ObservableResource):
    rt = "switch"
    if_ = "core.a"
    ct = 0

    def __init__(self):
        super().__init__()
        self.on = False

    async def render_get(self, request):
        return aiocoap.Message(payload=b"true" if self.on else b"false", content_format=0)

    async def render_put(self, request):
        text = request.payload.decode().strip().lower()
        if text not in ("true", "false", "on", "off", "1", "0"):
            return aiocoap.Message(code=aiocoap.BAD_REQUEST)
        self.on = text in ("true", "on", "1")
        print(f"lamp {'on' if self.on else 'off'}", flush=True)
        self.updated_state()
        return aiocoap.Message(code=aiocoap.CHANGED)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rd", required=True)
    parser.add_argument("--ep", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--lwm2m", action="store_true")
    parser.add_argument("--senml", action="store_true")
    parser.add_argument("--deregister-after", type=float)
    args = parser.parse_args()

    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    parameters = {"ep": args.ep}
    if args.lwm2m:
        temperature = SenmlIpsoTemperature() if args.senml else IpsoTemperature()
        site.add_resource(["3303", "0", "5700"], temperature)
        site.add_resource(["3311", "0", "5850"], Lamp())
        strings = ["Aiocoap Works", f"AD-{args.ep}", f"SN-{args.port}", "1.0.7"]
        site.add_resource(["3", "0"], DeviceObject(strings, args.senml))
        parameters["lwm2m"] = "1.1"
    else:
        temperature = Temperature()
        site.add_resource(["sensors", "temp"], temperature)
        site.add_resource(["lamp"], Lamp())
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", args.port))

    registerer = Registerer(
        context,
        rd=args.rd,
        lt=args.lifetime,
        registration_parameters=parameters,
    )
    announced = None
    while True:
        await asyncio.sleep(args.interval)
        temperature.step()
        if announced is None and registerer.state == "registered":
            print("registered", flush=True)
            announced = asyncio.get_running_loop().time()
        elif (
            args.deregister_after is not None
            and announced is not None
            and asyncio.get_running_loop().time() - announced >= args.deregister_after
        ):
            await registerer.shutdown()
            print("deregistered", flush=True)
            args.deregister_after = None


if __name__ == "__main__":
    asyncio.run(main())
