// The fogbank service SDK for C: small helpers over the bindings that
// wit-bindgen c makes of the world (service.h), for what every service
// does — log a line, publish a number, answer a request with JSON.
#ifndef FOGBANK_H
#define FOGBANK_H

#include <stdlib.h>
#include <string.h>

#include "service.h"

// Logs `text` at `level` (FOGBANK_SERVICE_LOG_LEVEL_INFO, ...).
static inline void fogbank_log(fogbank_service_log_level_t level, const char *text) {
    service_string_t message;
    service_string_set(&message, text);
    fogbank_service_log_log(level, &message);
}

// Publishes `number` on the manifest's output `output`; false if refused.
static inline bool fogbank_publish_number(const char *output, double number) {
    service_string_t name;
    service_string_set(&name, output);
    fogbank_service_outputs_value_t value = {.tag = FOGBANK_SERVICE_TYPES_VALUE_NUMBER};
    value.val.number = number;
    fogbank_service_outputs_failure_t failure;
    if (fogbank_service_outputs_publish(&name, &value, &failure)) {
        return true;
    }
    fogbank_service_outputs_failure_free(&failure);
    return false;
}

// Fills an on-request answer: `status` with the JSON text `json`.
static inline void fogbank_respond_json(service_response_t *ret, uint16_t status, const char *json) {
    size_t len = strlen(json);
    ret->status = status;
    service_string_dup(&ret->content_type, "application/json");
    ret->body.ptr = malloc(len);
    ret->body.len = ret->body.ptr ? len : 0;
    if (ret->body.ptr) {
        memcpy(ret->body.ptr, json, len);
    }
}

#endif
