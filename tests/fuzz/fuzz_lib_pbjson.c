/* Fuzz target for lib/pbjson: hostile JSON text into pbjson_loads, and hostile protobuf bytes
 * unpacked and printed with pbjson_encode.
 *
 * The first byte picks the mode: 's' JSON as shoal.ServiceSpec, 't' JSON as
 * shoal.store.TxnRequest, 'p' protobuf bytes as shoal.ServiceSpec (other bytes: by value mod 3).
 * Beyond "no crash, no leak" (ASan build), two properties must hold and abort otherwise:
 * a failed decode leaves *ret NULL with a non-empty reason, and whatever the encoder prints the
 * decoder reads back to a message that prints the same text (the output is valid input). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objects.pb-c.h"
#include "pbjson.h"
#include "store.pb-c.h"

static void check_reencodes(const ProtobufCMessage *msg) {
    char *text = pbjson_dumps(msg, 0);
    if (!text)
        abort();
    ProtobufCMessage *back = NULL;
    char err[256];
    if (pbjson_loads(msg->descriptor, text, &back, err, sizeof err) != 0) {
        fprintf(stderr, "own output rejected: %s\n%s\n", err, text);
        abort();
    }
    char *again = pbjson_dumps(back, 0);
    if (!again || strcmp(text, again) != 0) {
        fprintf(stderr, "re-encoding differs:\n%s\n---\n%s\n", text, again ? again : "(null)");
        abort();
    }
    free(again);
    free(text);
    protobuf_c_message_free_unpacked(back, NULL);
}

static void fuzz_json(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    ProtobufCMessage *msg = (ProtobufCMessage *)text; /* must be overwritten */
    char err[256] = "";
    int rc = pbjson_loads(desc, text, &msg, err, sizeof err);
    if (rc < 0) {
        if (msg != NULL || err[0] == '\0')
            abort();
    } else {
        if (!msg || msg->descriptor != desc)
            abort();
        check_reencodes(msg);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    free(text);
}

static void fuzz_packed(const uint8_t *data, size_t size) {
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(&shoal__service_spec__descriptor, NULL, size, data);
    if (!msg)
        return;
    json_t *j = pbjson_encode(msg, PBJSON_EMIT_DEFAULTS);
    if (!j)
        abort();
    json_decref(j);
    check_reencodes(msg);
    protobuf_c_message_free_unpacked(msg, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    int mode = data[0] == 's' ? 0 : data[0] == 't' ? 1 : data[0] == 'p' ? 2 : data[0] % 3;
    data++;
    size--;
    switch (mode) {
    case 0:
        fuzz_json(&shoal__service_spec__descriptor, data, size);
        break;
    case 1:
        fuzz_json(&shoal__store__txn_request__descriptor, data, size);
        break;
    default:
        fuzz_packed(data, size);
        break;
    }
    return 0;
}
