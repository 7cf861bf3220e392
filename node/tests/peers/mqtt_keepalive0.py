"""Publishes one QoS 1 message with Keep Alive 0 (keep-alive off), as
MicroPython's umqtt.simple and other small device libraries connect by
default, using an independent client (paho-mqtt).

    python3 mqtt_keepalive0.py PORT LEVEL TOPIC PAYLOAD

LEVEL is 4 (MQTT 3.1.1) or 5. Exits 0 once the broker acknowledged the
CONNECT and the PUBLISH, 1 otherwise.
"""

import sys
import threading

import paho.mqtt.client as mqtt

port, level, topic, payload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
protocol = mqtt.MQTTv5 if level == 5 else mqtt.MQTTv311
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ka0-{level}", protocol=protocol)
connected, published = threading.Event(), threading.Event()
client.on_connect = lambda c, u, flags, reason, properties: reason == 0 and connected.set()
client.on_publish = lambda c, u, mid, reason, properties: published.set()
client.connect("127.0.0.1", port, keepalive=0)
client.loop_start()
ok = connected.wait(5)
if ok:
    client.publish(topic, payload, qos=1)
    ok = published.wait(5)
client.disconnect()
client.loop_stop()
sys.exit(0 if ok else 1)
