"""{{name}}: the highest temperature seen so far, on output `max`.

Built by `fogbank service build` (componentize-py); fogbank.py beside it
is the SDK.
"""

import fogbank
from fogbank import WitWorld  # noqa: F401  (the class componentize-py builds)


class Max(fogbank.Service):
    def start(self, config):
        # Kept in the store: a restart, upgrade or move carries on.
        self.highest = fogbank.store.json("highest")

    def reading(self, thing, value, time):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if self.highest is None or value > self.highest:
            self.highest = value
            fogbank.store.put_json("highest", value)
            fogbank.publish("max", value)
            fogbank.info(f"new highest {value} from {thing}")

    def request(self, method, path, body):
        return {"highest": self.highest}


fogbank.serve(Max())
