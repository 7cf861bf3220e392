// Occupancy light: motion on a floor switches that floor's lamp on; when
// no motion has been seen there for `hold-seconds` the lamp goes off. The
// output `occupied` counts the floors whose lamp this service holds on.
//
// A floor's lamp is the thing `lamp` of the same device as its motion
// sensor: `gw.sim.building-b-floor-2.motion` -> `gw.sim.building-b-floor-2.lamp`.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fogbank.h"

#define MAX_FLOORS 64
#define MAX_ID 160

struct floor {
    char lamp[MAX_ID];
    uint64_t last_motion_us;
    bool lit;
};

static struct floor floors[MAX_FLOORS];
static size_t floor_count;
static uint64_t hold_us = 30 * 1000000ull;

// The floor a motion sensor belongs to, added on first sight; NULL if the
// id does not end in ".motion" or there are too many floors.
static struct floor *floor_of(const service_string_t *motion) {
    static const char suffix[] = ".motion";
    size_t stem = motion->len - (sizeof suffix - 1);
    if (motion->len < sizeof suffix || motion->len - (sizeof suffix - 1) + 5 >= MAX_ID ||
        memcmp(motion->ptr + stem, suffix, sizeof suffix - 1) != 0) {
        return NULL;
    }
    char lamp[MAX_ID];
    memcpy(lamp, motion->ptr, stem);
    memcpy(lamp + stem, ".lamp", 6);
    for (size_t i = 0; i < floor_count; i++) {
        if (strcmp(floors[i].lamp, lamp) == 0) {
            return &floors[i];
        }
    }
    if (floor_count == MAX_FLOORS) {
        return NULL;
    }
    struct floor *f = &floors[floor_count++];
    memcpy(f->lamp, lamp, stem + 6);
    return f;
}

static void switch_lamp(struct floor *f, bool on) {
    service_string_t id;
    service_string_set(&id, f->lamp);
    fogbank_service_things_value_t value = {.tag = FOGBANK_SERVICE_TYPES_VALUE_BOOLEAN};
    value.val.boolean = on;
    service_string_t command;
    fogbank_service_things_failure_t failure;
    char line[MAX_ID + 64];
    if (fogbank_service_things_actuate(&id, &value, &command, &failure)) {
        f->lit = on;
        snprintf(line, sizeof line, "%s switched %s", f->lamp, on ? "on" : "off");
        fogbank_log(FOGBANK_SERVICE_LOG_LEVEL_INFO, line);
        service_string_free(&command);
    } else {
        snprintf(line, sizeof line, "cannot switch %s: %.*s", f->lamp,
                 (int)failure.val.denied.len, (const char *)failure.val.denied.ptr);
        fogbank_log(FOGBANK_SERVICE_LOG_LEVEL_ERROR, line);
        fogbank_service_things_failure_free(&failure);
    }
}

static void publish_occupied(void) {
    size_t lit = 0;
    for (size_t i = 0; i < floor_count; i++) {
        lit += floors[i].lit;
    }
    fogbank_publish_number("occupied", (double)lit);
}

bool exports_service_init(service_string_t *config, service_string_t *err) {
    // The config is a flat JSON object written by the gateway: find the
    // number after "hold-seconds":.
    char text[512];
    size_t n = config->len < sizeof text - 1 ? config->len : sizeof text - 1;
    memcpy(text, config->ptr, n);
    text[n] = 0;
    service_string_free(config);
    const char *key = strstr(text, "\"hold-seconds\":");
    if (key != NULL) {
        double seconds = strtod(key + strlen("\"hold-seconds\":"), NULL);
        if (seconds <= 0) {
            service_string_dup(err, "config.hold-seconds must be positive");
            return false;
        }
        hold_us = (uint64_t)(seconds * 1e6);
    }
    fogbank_log(FOGBANK_SERVICE_LOG_LEVEL_INFO, "watching motion in building B");
    return true;
}

void exports_service_on_reading(service_string_t *thing_id, service_reading_t *reading) {
    if (reading->value.tag == FOGBANK_SERVICE_TYPES_VALUE_BOOLEAN && reading->value.val.boolean) {
        struct floor *f = floor_of(thing_id);
        if (f != NULL) {
            f->last_motion_us = fogbank_service_clock_now();
            if (!f->lit) {
                switch_lamp(f, true);
                publish_occupied();
            }
        }
    }
    service_string_free(thing_id);
    service_reading_free(reading);
}

void exports_service_on_timer(void) {
    uint64_t now = fogbank_service_clock_now();
    bool changed = false;
    for (size_t i = 0; i < floor_count; i++) {
        if (floors[i].lit && now - floors[i].last_motion_us > hold_us) {
            switch_lamp(&floors[i], false);
            changed = true;
        }
    }
    if (changed) {
        publish_occupied();
    }
}

void exports_service_on_request(service_string_t *method, service_string_t *path,
                                service_list_u8_t *body, service_response_t *ret) {
    size_t lit = 0;
    for (size_t i = 0; i < floor_count; i++) {
        lit += floors[i].lit;
    }
    char json[64];
    snprintf(json, sizeof json, "{\"floors\":%zu,\"lit\":%zu}", floor_count, lit);
    fogbank_respond_json(ret, 200, json);
    service_string_free(method);
    service_string_free(path);
    service_list_u8_free(body);
}
