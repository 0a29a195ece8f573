/* pbjson — protobuf-c messages to and from JSON (jansson), driven by the descriptors, so any
 * message of proto/ can be printed (`--json`) or built from user JSON (`shoalctl call`).
 *
 * Mapping (proto3 JSON, simplified): field names as in the .proto (snake_case; lowerCamelCase is
 * accepted on input); enums as their value names ("RUNNING"), numbers accepted on input; 64-bit
 * integers as JSON numbers; bytes as base64 strings; repeated fields as arrays; oneof members as
 * ordinary fields; default-valued scalar fields are omitted on output unless PBJSON_EMIT_DEFAULTS.
 * Bytes fields that hold a protobuf message of a known type are not decoded (they are bytes). */
#pragma once
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#define PBJSON_EMIT_DEFAULTS 1u

/* New reference, or NULL on allocation failure. */
json_t *pbjson_encode(const ProtobufCMessage *msg, unsigned flags);
/* Encodes and dumps with indentation (2) to a malloc'd string. */
char *pbjson_dumps(const ProtobufCMessage *msg, unsigned flags);

/* Builds a message of type `desc` from `json`. Returns 0 or -EINVAL with a one-line reason in
 * errbuf ("field \"replicas\": expected a number"). Free with protobuf_c_message_free_unpacked
 * (the message is allocated with the system allocator like an unpacked one). */
int pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                  ProtobufCMessage **ret, char *errbuf, size_t errlen);
int pbjson_loads(const ProtobufCMessageDescriptor *desc, const char *text, ProtobufCMessage **ret,
                 char *errbuf, size_t errlen);

/* Looks a message descriptor up by full name ("shoal.store.PutRequest") among every message of
 * proto/. NULL when unknown. */
const ProtobufCMessageDescriptor *pbjson_find_descriptor(const char *full_name);
