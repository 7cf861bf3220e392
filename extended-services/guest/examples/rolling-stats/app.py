"""Rolling statistics of a building's temperature sensors.

Keeps the last `window` readings of every temperature sensor of building B
and publishes the building's mean, minimum and maximum over them at each
tick. The windows live in the service's store, so a restart, an upgrade or
a move to another gateway carries on from them. GET /stats answers every
sensor's figures as JSON.
"""

from collections import deque
from statistics import fmean

import fogbank
from fogbank import WitWorld  # noqa: F401  (the class componentize-py builds)


class RollingStats(fogbank.Service):
    def start(self, config):
        self.window = int(config.get("window", 30))
        if self.window < 1:
            raise ValueError("window must be at least 1")
        kept = fogbank.store.json("windows", {})
        self.windows = {
            thing: deque(values, maxlen=self.window) for thing, values in kept.items()
        }
        fogbank.info(f"rolling statistics over {self.window} readings, {len(self.windows)} sensors kept")

    def reading(self, thing, value, time):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        self.windows.setdefault(thing, deque(maxlen=self.window)).append(value)

    def timer(self):
        values = [v for window in self.windows.values() for v in window]
        if not values:
            return
        fogbank.publish("mean", round(fmean(values), 3))
        fogbank.publish("min", min(values))
        fogbank.publish("max", max(values))
        fogbank.store.put_json("windows", {t: list(w) for t, w in self.windows.items()})

    def request(self, method, path, body):
        if method != "GET" or path != "/stats":
            return 404, "text/plain", "GET /stats"
        return {
            thing: {"n": len(w), "mean": fmean(w), "min": min(w), "max": max(w)}
            for thing, w in sorted(self.windows.items())
            if w
        }


fogbank.serve(RollingStats())
