// {{name}}: the highest temperature seen so far, on output `max`.
// Built by `fogbank service build` (wit-bindgen c, clang 19,
// wasm-component-ld); service.h comes from the world in wit/, fogbank.h
// is the SDK.

#include <stdio.h>

#include "fogbank.h"

static bool seen;
static double highest;

bool exports_service_init(service_string_t *config, service_string_t *err) {
    (void)err;
    service_string_free(config);
    fogbank_log(FOGBANK_SERVICE_LOG_LEVEL_INFO, "watching temperatures");
    return true;
}

void exports_service_on_reading(service_string_t *thing_id, service_reading_t *reading) {
    if (reading->value.tag == FOGBANK_SERVICE_TYPES_VALUE_NUMBER &&
        (!seen || reading->value.val.number > highest)) {
        seen = true;
        highest = reading->value.val.number;
        if (!fogbank_publish_number("max", highest)) {
            fogbank_log(FOGBANK_SERVICE_LOG_LEVEL_WARN, "cannot publish max");
        }
        char line[200];
        snprintf(line, sizeof line, "new highest %g from %.*s", highest, (int)thing_id->len,
                 (const char *)thing_id->ptr);
        fogbank_log(FOGBANK_SERVICE_LOG_LEVEL_INFO, line);
    }
    service_string_free(thing_id);
    service_reading_free(reading);
}

void exports_service_on_timer(void) {}

void exports_service_on_request(service_string_t *method, service_string_t *path,
                                service_list_u8_t *body, service_response_t *ret) {
    char json[64];
    if (seen) {
        snprintf(json, sizeof json, "{\"highest\":%g}", highest);
    } else {
        snprintf(json, sizeof json, "{\"highest\":null}");
    }
    fogbank_respond_json(ret, 200, json);
    service_string_free(method);
    service_string_free(path);
    service_list_u8_free(body);
}
