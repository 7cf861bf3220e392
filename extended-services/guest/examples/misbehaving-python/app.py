"""A Python service that misbehaves as its config says, for the gateway's
tests: the host must contain it like any other guest.

- `mode = "raise"`: every reading raises ZeroDivisionError; the traceback
  must reach the service log.
- `mode = "spin"`: every reading loops forever; the CPU deadline stops it.
- `mode = "bomb"`: every reading grows a list until memory runs out; the
  memory limit stops it.
"""

import fogbank
from fogbank import WitWorld  # noqa: F401


class Misbehaving(fogbank.Service):
    def start(self, config):
        self.mode = config.get("mode", "raise")

    def reading(self, thing, value, time):
        if self.mode == "raise":
            print(f"dividing {value} by zero", flush=True)
            value / 0
        elif self.mode == "spin":
            while True:
                pass
        elif self.mode == "bomb":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))


fogbank.serve(Misbehaving())
