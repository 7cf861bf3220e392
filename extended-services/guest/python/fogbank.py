"""The fogbank:service world for Python services.

A service subclasses `Service`, overrides what it needs, and hands an
instance to `serve` in its main module, which also re-exports `WitWorld`
(the class componentize-py looks for):

    import fogbank
    from fogbank import WitWorld  # noqa: F401

    class Echo(fogbank.Service):
        def reading(self, thing, value, time):
            fogbank.publish("out", value)

    fogbank.serve(Echo())

Values are plain Python: float, str or bool. Host calls that the manifest
does not grant, or that fail, raise `Refused` with the host's reason.
Times are microseconds since the Unix epoch, as the host gives them.
"""

import json

import componentize_py_types
import wit_world
from wit_world.imports import clock, log as _log, outputs, store as _store, things
from wit_world.imports import types

__all__ = [
    "Service", "serve", "Refused", "WitWorld",
    "find", "read", "history", "actuate", "publish", "store", "now",
    "debug", "info", "warn", "error",
]


class Refused(Exception):
    """A host call the manifest does not grant, or that failed.

    `kind` is one of denied, not-found, invalid, unavailable, limit.
    """

    def __init__(self, kind, reason):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


_FAILURES = {
    types.Failure_Denied: "denied",
    types.Failure_NotFound: "not-found",
    types.Failure_Invalid: "invalid",
    types.Failure_Unavailable: "unavailable",
    types.Failure_Limit: "limit",
}


def _call(function, *args):
    try:
        return function(*args)
    except componentize_py_types.Err as err:
        failure = err.value
        raise Refused(_FAILURES.get(type(failure), "failed"), failure.value) from None


def _to_wit(value):
    # bool first: a bool is an int in Python.
    if isinstance(value, bool):
        return types.Value_Boolean(value)
    if isinstance(value, (int, float)):
        return types.Value_Number(float(value))
    if isinstance(value, str):
        return types.Value_Text(value)
    raise TypeError(f"a reading is a float, a str or a bool, not {type(value).__name__}")


def _from_wit(value):
    return value.value


# ----------------------------------------------------------------- things

def find(type=None, location=None, id=None):
    """Thing services of the local cloud that match (no grant needed): a
    list of dicts with id, kind, type, unit, location, gateway, available."""
    found = things.find(types.Selector(type=type, location=location, id=id))
    return [
        {
            "id": t.id,
            "kind": "sensor" if t.kind == types.Kind.SENSOR else "actuator",
            "type": t.type,
            "unit": t.unit,
            "location": t.location,
            "gateway": t.gateway,
            "available": t.available,
        }
        for t in found
    ]


def read(thing):
    """The latest (value, time) of a thing service, or None. Needs a read grant."""
    reading = _call(things.read_latest, thing)
    return None if reading is None else (_from_wit(reading.value), reading.time)


def history(thing, since=None, until=None, limit=1000):
    """[(value, time)] from `since` (inclusive) to `until` (exclusive),
    oldest first. Needs a read grant."""
    return [(_from_wit(r.value), r.time) for r in _call(things.read_history, thing, since, until, limit)]


def actuate(thing, value):
    """Sends a command to an actuator; returns its id. Needs an actuate grant."""
    return _call(things.actuate, thing, _to_wit(value))


def publish(output, value):
    """Records a reading of one of the manifest's outputs."""
    _call(outputs.publish, output, _to_wit(value))


def now():
    """Wall-clock time, microseconds since the epoch."""
    return clock.now()


# ------------------------------------------------------------------ store

class _Store:
    """The service's key-value store as a mapping of str to bytes, kept
    across restarts, upgrades and moves. `store.json(key)` and
    `store.put_json(key, value)` keep JSON values."""

    def __getitem__(self, key):
        value = _store.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = _store.get(key)
        return default if value is None else value

    def __setitem__(self, key, value):
        _call(_store.set, key, bytes(value))

    def __delitem__(self, key):
        _store.delete(key)

    def __contains__(self, key):
        return _store.get(key) is not None

    def keys(self, prefix=""):
        return _store.keys(prefix)

    def json(self, key, default=None):
        value = _store.get(key)
        return default if value is None else json.loads(value)

    def put_json(self, key, value):
        self[key] = json.dumps(value).encode()


store = _Store()


# -------------------------------------------------------------------- log

def debug(message):
    _log.log(_log.Level.DEBUG, str(message))


def info(message):
    _log.log(_log.Level.INFO, str(message))


def warn(message):
    _log.log(_log.Level.WARN, str(message))


def error(message):
    _log.log(_log.Level.ERROR, str(message))


# ---------------------------------------------------------------- service

class Service:
    """What a service does; every hook is optional."""

    def start(self, config):
        """Once, with the manifest's [config] as a dict. Raise to fail."""

    def reading(self, thing, value, time):
        """A reading of a subscribed thing service."""

    def timer(self):
        """Every `timer` period of the manifest."""

    def request(self, method, path, body):
        """A call to /api/v1/services/{name}/call/{path}: return
        (status, content_type, body as bytes or str), or a value to send
        as JSON with status 200."""
        return 404, "text/plain", b"no such call"


_service = Service()


def serve(service):
    """Makes `service` the one the gateway calls."""
    global _service
    _service = service


class WitWorld(wit_world.WitWorld):
    """The world's exports, handed to the served `Service`."""

    def init(self, config):
        try:
            _service.start(json.loads(config) if config else {})
        except Exception as failure:
            raise componentize_py_types.Err(f"{type(failure).__name__}: {failure}")

    def on_reading(self, thing_id, reading):
        _service.reading(thing_id, _from_wit(reading.value), reading.time)

    def on_timer(self):
        _service.timer()

    def on_request(self, method, path, body):
        answer = _service.request(method, path, bytes(body))
        if isinstance(answer, tuple):
            status, content_type, payload = answer
        else:
            status, content_type, payload = 200, "application/json", json.dumps(answer)
        if isinstance(payload, str):
            payload = payload.encode()
        return types.Response(status=status, content_type=content_type, body=payload)
