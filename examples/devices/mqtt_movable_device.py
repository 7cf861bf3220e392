"""An MQTT device that a fogbank gateway can move to another gateway.

A reference for device makers, with paho-mqtt, following fogbank's MQTT
conventions (README, "MQTT devices"; docs/moves.md, "MQTT devices"):

- it publishes its temperature on things/{device}/temperature;
- it says it follows a transport-management policy by publishing,
  retained, its current one on things/{device}/policy — a JSON object with
  the resources of LWM2M object 31024: "service", "address", "port",
  "protocol" ("mqtt");
- it subscribes to things/{device}/policy/set. When the gateway publishes
  (retained) a policy there naming another broker, the device clears both
  retained messages at the broker it leaves (empty payloads), so that it is
  not sent back when it returns, disconnects, connects to the new broker,
  and carries on there.

    python3 mqtt_movable_device.py --broker HOST:PORT --device NAME
        [--interval SECS]

The temperature starts at 20.0 and rises by 0.01 every interval, so each
value is told apart. It prints one line per event: "connected to
HOST:PORT", "policy SERVICE HOST:PORT PROTOCOL".
"""

import argparse
import json
import queue
import sys
import time

import paho.mqtt.client as mqtt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True, help="HOST:PORT")
    parser.add_argument("--device", required=True)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    host, port = args.broker.rsplit(":", 1)
    device = args.device
    policies = queue.Queue()

    def connect(host, port):
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"movable-{device}",
            clean_session=True,
        )

        def on_message(_client, _userdata, message):
            if message.payload:
                try:
                    policies.put(json.loads(message.payload))
                except ValueError:
                    pass

        client.on_message = on_message
        client.connect(host, int(port))
        client.loop_start()
        client.subscribe(f"things/{device}/policy/set", qos=1)
        policy = {"service": "", "address": host, "port": int(port), "protocol": "mqtt"}
        client.publish(f"things/{device}/policy", json.dumps(policy), qos=1, retain=True).wait_for_publish()
        print(f"connected to {host}:{port}", flush=True)
        return client

    client = connect(host, port)
    temperature = 20.0
    while True:
        try:
            policy = policies.get(timeout=args.interval)
        except queue.Empty:
            policy = None
        if policy is not None:
            address, new_port = str(policy.get("address", "")), policy.get("port")
            if policy.get("protocol", "mqtt") != "mqtt" or not address or not isinstance(new_port, int):
                continue
            if (address, new_port) == (host, int(port)):
                continue
            print(f"policy {policy.get('service', '')} {address}:{new_port} mqtt", flush=True)
            for topic in (f"things/{device}/policy/set", f"things/{device}/policy"):
                client.publish(topic, b"", qos=1, retain=True).wait_for_publish()
            client.loop_stop()
            client.disconnect()
            host, port = address, new_port
            client = connect(host, port)
            continue
        temperature = round(temperature + 0.01, 2)
        info = client.publish(f"things/{device}/temperature", f"{temperature:.2f}", qos=1)
        info.wait_for_publish(timeout=5)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
