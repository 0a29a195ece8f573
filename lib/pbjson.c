/* pbjson — protobuf-c messages to and from JSON, driven only by the descriptors.
 *
 * Why descriptors and not per-message code: `shoalctl call` builds the input of any method from
 * the type name bus.Describe reports, and every `--json` listing prints whatever message it has.
 * One walker over ProtobufCFieldDescriptor (label, type, offset, quantifier_offset, the ONEOF
 * flag) serves all of proto/ and stays right when a .proto changes.
 *
 * Memory invariant of the decoder: the message under construction is at every moment a valid
 * "unpacked" message, so that protobuf_c_message_free_unpacked() can free it after an error half
 * way through. Concretely: a sub-message is initialised (protobuf_c_message_init) before it is
 * linked in; a repeated field's array is zero-filled and its count covers an element before the
 * element is decoded (a zero element frees as nothing); a oneof member's storage is zeroed and
 * its case set before it is decoded. Everything is allocated with malloc, like the default
 * protobuf-c allocator.
 *
 * Output follows proto3 JSON with the simplifications of pbjson.h: .proto field names, enum
 * value names, 64-bit integers as JSON numbers (a uint64 above INT64_MAX becomes a decimal
 * string, the only form jansson can hold exactly), NaN/Infinity as strings, bytes as standard
 * base64, strings that are not UTF-8 repaired with U+FFFD (unpack does not validate them, but a
 * JSON document must be UTF-8). Input is lenient where it costs nothing: lowerCamelCase names,
 * enum numbers and case-insensitive names, integers as strings, base64url and missing padding,
 * null for "unset".
 *
 * Errors name the field path from the top message ("task.container.mounts[1].type"). The library
 * never prints (STYLE: lib/ returns errors). Callers: tools/shoalctl, tools/shoal, daemons that
 * log a message as JSON at debug level. */
#include "pbjson.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "bus.pb-c.h"
#include "dispatcher.pb-c.h"
#include "dns.pb-c.h"
#include "objects.pb-c.h"
#include "orchestrator.pb-c.h"
#include "scheduler.pb-c.h"
#include "store.pb-c.h"

#define MEMBER_PTR(msg, off)  ((void *)((char *)(msg) + (off)))
#define CMEMBER_PTR(msg, off) ((const void *)((const char *)(msg) + (off)))
/* Deeper than any message of proto/ nests; bounds recursion on hostile JSON. */
#define PBJSON_MAX_DEPTH 64

/* ---- base64 ------------------------------------------------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const uint8_t *in, size_t len) {
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    char *p = out;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *p++ = b64_alphabet[v >> 18 & 63];
        *p++ = b64_alphabet[v >> 12 & 63];
        *p++ = b64_alphabet[v >> 6 & 63];
        *p++ = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *p++ = b64_alphabet[v >> 18 & 63];
        *p++ = b64_alphabet[v >> 12 & 63];
        *p++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
        *p++ = '=';
    }
    *p = '\0';
    return out;
}

static int base64_value(char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Standard or URL-safe alphabet, padding optional. -EINVAL on anything else. */
static int base64_decode(const char *in, size_t len, uint8_t **ret, size_t *ret_len) {
    size_t pad = 0;
    while (len > 0 && in[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (len % 4 == 1 || (pad && (len + pad) % 4 != 0))
        return -EINVAL;
    uint8_t *out = malloc(len / 4 * 3 + 3);
    if (!out)
        return -ENOMEM;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = base64_value(in[i]);
        if (v < 0) {
            free(out);
            return -EINVAL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    *ret = out;
    *ret_len = n;
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 when invalid. */
static size_t utf8_sequence(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* A JSON string of `s`, each byte that is not valid UTF-8 replaced by U+FFFD. */
static json_t *json_string_repaired(const char *s) {
    size_t len = strlen(s);
    char *fixed = malloc(len * 3 + 1);
    if (!fixed)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence((const unsigned char *)s + i);
        if (n == 0) {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(fixed + o, s + i, n);
            o += n;
            i += n;
        }
    }
    fixed[o] = '\0';
    json_t *j = json_stringn(fixed, o);
    free(fixed);
    return j;
}

static json_t *string_to_json(const char *s) {
    if (!s)
        s = "";
    json_t *j = json_string(s);
    return j ? j : json_string_repaired(s);
}

/* ---- encoding ----------------------------------------------------------------------------- */

static size_t field_value_size(ProtobufCType type) {
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static json_t *real_to_json(double v) {
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    return json_real(v);
}

/* The double nearest the shortest decimal that reads back as `f`, so 0.1f prints as 0.1 and not
 * 0.100000001490116. */
static double float_to_double_shortest(float f) {
    if (!isfinite(f))
        return f;
    char buf[48];
    for (int precision = 1; precision <= 9; precision++) {
        snprintf(buf, sizeof buf, "%.*g", precision, (double)f);
        if (strtof(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return f;
}

static json_t *encode_message(const ProtobufCMessage *msg, unsigned flags, int depth);

/* One value of `f` stored at `value` (an element, for repeated fields). */
static json_t *encode_value(const ProtobufCFieldDescriptor *f, const void *value, unsigned flags,
                            int depth) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)value);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)value);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)value);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v = *(const uint64_t *)value;
        if (v <= (uint64_t)INT64_MAX)
            return json_integer((json_int_t)v);
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRIu64, v);
        return json_string(buf);
    }
    case PROTOBUF_C_TYPE_FLOAT:
        return real_to_json(float_to_double_shortest(*(const float *)value));
    case PROTOBUF_C_TYPE_DOUBLE:
        return real_to_json(*(const double *)value);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)value);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)value;
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value((const ProtobufCEnumDescriptor *)f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING:
        return string_to_json(*(char *const *)value);
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = value;
        char *text = base64_encode(b->data, b->data ? b->len : 0);
        if (!text)
            return NULL;
        json_t *j = json_string(text);
        free(text);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)value;
        return sub ? encode_message(sub, flags, depth + 1) : json_null();
    }
    }
    return json_null();
}

static bool value_is_zero(const ProtobufCFieldDescriptor *f, const void *value) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)value == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)value == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)value;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)value)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)value == NULL;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)value == 0;
    default: {
        size_t size = field_value_size(f->type);
        return size == 4 ? *(const uint32_t *)value == 0 : *(const uint64_t *)value == 0;
    }
    }
}

/* Whether a singular field is written: set oneof member, proto2 has_ flag, or (proto3) not the
 * default value. Unset sub-messages are never written, not even with EMIT_DEFAULTS. */
static bool field_is_written(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                             unsigned flags) {
    const void *value = CMEMBER_PTR(msg, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)CMEMBER_PTR(msg, f->quantifier_offset) == f->id;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(ProtobufCMessage *const *)value != NULL;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (f->type == PROTOBUF_C_TYPE_STRING)
            return *(char *const *)value != NULL;
        return *(const protobuf_c_boolean *)CMEMBER_PTR(msg, f->quantifier_offset) ||
               (flags & PBJSON_EMIT_DEFAULTS);
    }
    return (flags & PBJSON_EMIT_DEFAULTS) || !value_is_zero(f, value);
}

static json_t *encode_message(const ProtobufCMessage *msg, unsigned flags, int depth) {
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    if (depth > PBJSON_MAX_DEPTH)
        return obj; /* only a self-referencing message built by hand gets here */
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        json_t *v;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)CMEMBER_PTR(msg, f->quantifier_offset);
            const char *arr = *(char *const *)CMEMBER_PTR(msg, f->offset);
            if (!arr)
                n = 0;
            if (n == 0 && !(flags & PBJSON_EMIT_DEFAULTS))
                continue;
            v = json_array();
            size_t size = field_value_size(f->type);
            for (size_t k = 0; v && k < n; k++) {
                if (json_array_append_new(v, encode_value(f, arr + k * size, flags, depth)) < 0) {
                    json_decref(v);
                    v = NULL;
                }
            }
        } else {
            if (!field_is_written(msg, f, flags))
                continue;
            v = encode_value(f, CMEMBER_PTR(msg, f->offset), flags, depth);
        }
        if (!v || json_object_set_new(obj, f->name, v) < 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

json_t *pbjson_encode(const ProtobufCMessage *msg, unsigned flags) {
    if (!msg || !msg->descriptor)
        return NULL;
    return encode_message(msg, flags, 0);
}

char *pbjson_dumps(const ProtobufCMessage *msg, unsigned flags) {
    json_t *j = pbjson_encode(msg, flags);
    if (!j)
        return NULL;
    /* 15 significant digits: floats come out in their shortest form and no double field of
     * proto/ needs more. */
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(j);
    return text;
}

/* ---- decoding ----------------------------------------------------------------------------- */

typedef struct decoder {
    char path[256]; /* "task.container.mounts[1]" */
    size_t path_len;
    char *errbuf;
    size_t errlen;
    int depth;
} decoder_t;

static size_t path_push_field(decoder_t *d, const char *name) {
    size_t saved = d->path_len;
    int n = snprintf(d->path + saved, sizeof d->path - saved, "%s%s", saved ? "." : "", name);
    d->path_len = n < 0 ? saved : saved + (size_t)n;
    if (d->path_len >= sizeof d->path)
        d->path_len = sizeof d->path - 1;
    return saved;
}

static size_t path_push_index(decoder_t *d, size_t index) {
    size_t saved = d->path_len;
    int n = snprintf(d->path + saved, sizeof d->path - saved, "[%zu]", index);
    d->path_len = n < 0 ? saved : saved + (size_t)n;
    if (d->path_len >= sizeof d->path)
        d->path_len = sizeof d->path - 1;
    return saved;
}

static void path_pop(decoder_t *d, size_t saved) {
    d->path_len = saved;
    d->path[saved] = '\0';
}

static int fail(decoder_t *d, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(decoder_t *d, int err, const char *fmt, ...) {
    if (!d->errbuf || d->errlen == 0)
        return err;
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (d->path_len)
        snprintf(d->errbuf, d->errlen, "field \"%s\": %s", d->path, reason);
    else
        snprintf(d->errbuf, d->errlen, "%s", reason);
    return err;
}

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

/* Any JSON integer, integral real or decimal string as a signed or unsigned 64-bit value. */
static int parse_integer(decoder_t *d, const json_t *j, bool is_unsigned, int64_t *ret_s,
                         uint64_t *ret_u) {
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (is_unsigned && v < 0)
            return fail(d, -EINVAL, "must not be negative (got %lld)", (long long)v);
        *ret_s = v;
        *ret_u = (uint64_t)v;
        return 0;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j);
        if (v != floor(v))
            return fail(d, -EINVAL, "expected an integer (got %g)", v);
        if (is_unsigned ? (v < 0 || v >= 18446744073709551616.0)
                        : (v < -9223372036854775808.0 || v >= 9223372036854775808.0))
            return fail(d, -EINVAL, "%g is out of range", v);
        if (is_unsigned) {
            *ret_u = (uint64_t)v;
            *ret_s = (int64_t)*ret_u;
        } else {
            *ret_s = (int64_t)v;
            *ret_u = (uint64_t)*ret_s;
        }
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        errno = 0;
        if (!*s || isspace((unsigned char)*s) || (is_unsigned && *s == '-'))
            return fail(d, -EINVAL, "expected an integer (got \"%.40s\")", s);
        if (is_unsigned) {
            *ret_u = strtoull(s, &end, 10);
            *ret_s = (int64_t)*ret_u;
        } else {
            *ret_s = strtoll(s, &end, 10);
            *ret_u = (uint64_t)*ret_s;
        }
        if (*end || (size_t)(end - s) != json_string_length(j))
            return fail(d, -EINVAL, "expected an integer (got \"%.40s\")", s);
        if (errno == ERANGE)
            return fail(d, -EINVAL, "%.40s is out of range", s);
        return 0;
    }
    return fail(d, -EINVAL, "expected an integer, got %s", json_kind(j));
}

static int parse_real(decoder_t *d, const json_t *j, double *ret) {
    if (json_is_number(j)) {
        *ret = json_number_value(j);
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        if (!strcmp(s, "NaN")) {
            *ret = NAN;
            return 0;
        }
        if (!strcmp(s, "Infinity")) {
            *ret = INFINITY;
            return 0;
        }
        if (!strcmp(s, "-Infinity")) {
            *ret = -INFINITY;
            return 0;
        }
        char *end;
        if (*s && !isspace((unsigned char)*s)) {
            double v = strtod(s, &end);
            if (!*end && isfinite(v) && (size_t)(end - s) == json_string_length(j)) {
                *ret = v;
                return 0;
            }
        }
        return fail(d, -EINVAL, "expected a number (got \"%.40s\")", s);
    }
    return fail(d, -EINVAL, "expected a number, got %s", json_kind(j));
}

static int parse_enum(decoder_t *d, const ProtobufCEnumDescriptor *ed, const json_t *j, int *ret) {
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
        for (unsigned i = 0; !ev && i < ed->n_values; i++)
            if (!strcasecmp(ed->values[i].name, s))
                ev = &ed->values[i];
        if (!ev) {
            char names[160] = "";
            size_t o = 0;
            for (unsigned i = 0; i < ed->n_values && o < sizeof names; i++) {
                int n = snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "",
                                 ed->values[i].name);
                o += n > 0 ? (size_t)n : 0;
            }
            return fail(d, -EINVAL, "unknown %s value \"%.40s\" (one of: %s)", ed->name, s, names);
        }
        *ret = ev->value;
        return 0;
    }
    if (json_is_number(j)) {
        int64_t s;
        uint64_t u;
        int rc = parse_integer(d, j, false, &s, &u);
        if (rc < 0)
            return rc;
        if (s < INT32_MIN || s > INT32_MAX)
            return fail(d, -EINVAL, "%lld is out of range for %s", (long long)s, ed->name);
        *ret = (int)s;
        return 0;
    }
    return fail(d, -EINVAL, "expected a %s name, got %s", ed->name, json_kind(j));
}

static int decode_message(decoder_t *d, const ProtobufCMessageDescriptor *desc, const json_t *j,
                          ProtobufCMessage *msg);

static ProtobufCMessage *message_alloc(const ProtobufCMessageDescriptor *desc) {
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    if (m)
        protobuf_c_message_init(desc, m);
    return m;
}

/* Decodes one value of `f` into `slot`, which holds either the field's default (singular) or
 * zeroes (repeated element, oneof member). A string, bytes or message slot owns what it points
 * to as soon as it is written. */
static int decode_value(decoder_t *d, const ProtobufCFieldDescriptor *f, const json_t *j,
                        void *slot) {
    int64_t s;
    uint64_t u;
    int rc;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((rc = parse_integer(d, j, false, &s, &u)) < 0)
            return rc;
        if (s < INT32_MIN || s > INT32_MAX)
            return fail(d, -EINVAL, "%lld is out of range for int32", (long long)s);
        *(int32_t *)slot = (int32_t)s;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((rc = parse_integer(d, j, true, &s, &u)) < 0)
            return rc;
        if (u > UINT32_MAX)
            return fail(d, -EINVAL, "%llu is out of range for uint32", (unsigned long long)u);
        *(uint32_t *)slot = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((rc = parse_integer(d, j, false, &s, &u)) < 0)
            return rc;
        *(int64_t *)slot = s;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = parse_integer(d, j, true, &s, &u)) < 0)
            return rc;
        *(uint64_t *)slot = u;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT: {
        double v;
        if ((rc = parse_real(d, j, &v)) < 0)
            return rc;
        if (isfinite(v) && fabs(v) > FLT_MAX)
            return fail(d, -EINVAL, "%g is out of range for float", v);
        *(float *)slot = (float)v;
        return 0;
    }
    case PROTOBUF_C_TYPE_DOUBLE:
        return parse_real(d, j, (double *)slot);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            return fail(d, -EINVAL, "expected true or false, got %s", json_kind(j));
        *(protobuf_c_boolean *)slot = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_ENUM:
        return parse_enum(d, f->descriptor, j, (int *)slot);
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            return fail(d, -EINVAL, "expected a string, got %s", json_kind(j));
        const char *v = json_string_value(j);
        if (strlen(v) != json_string_length(j))
            return fail(d, -EINVAL, "strings must not contain NUL characters");
        char *copy = strdup(v);
        if (!copy)
            return fail(d, -ENOMEM, "out of memory");
        char **dst = slot;
        if (*dst && *dst != f->default_value)
            free(*dst);
        *dst = copy;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(j))
            return fail(d, -EINVAL, "expected a base64 string, got %s", json_kind(j));
        uint8_t *data;
        size_t len;
        rc = base64_decode(json_string_value(j), json_string_length(j), &data, &len);
        if (rc == -ENOMEM)
            return fail(d, rc, "out of memory");
        if (rc < 0)
            return fail(d, rc, "invalid base64");
        ProtobufCBinaryData *dst = slot;
        const ProtobufCBinaryData *def = f->default_value;
        if (dst->data && (!def || def->data != dst->data))
            free(dst->data);
        if (len == 0) {
            free(data);
            data = NULL;
        }
        dst->data = data;
        dst->len = len;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *sub_desc = f->descriptor;
        if (!json_is_object(j))
            return fail(d, -EINVAL, "expected an object (%s), got %s", sub_desc->name,
                        json_kind(j));
        ProtobufCMessage **dst = slot;
        if (!*dst) {
            *dst = message_alloc(sub_desc);
            if (!*dst)
                return fail(d, -ENOMEM, "out of memory");
        }
        return decode_message(d, sub_desc, j, *dst);
    }
    }
    return fail(d, -EINVAL, "unsupported field type %d", (int)f->type);
}

static int decode_repeated(decoder_t *d, const ProtobufCFieldDescriptor *f, const json_t *j,
                           ProtobufCMessage *msg) {
    if (json_is_null(j))
        return 0;
    if (!json_is_array(j))
        return fail(d, -EINVAL, "expected an array, got %s", json_kind(j));
    size_t n = json_array_size(j);
    if (n == 0)
        return 0;
    size_t size = field_value_size(f->type);
    char *arr = calloc(n, size);
    if (!arr)
        return fail(d, -ENOMEM, "out of memory");
    size_t *count = MEMBER_PTR(msg, f->quantifier_offset);
    char **arr_slot = MEMBER_PTR(msg, f->offset);
    *arr_slot = arr;
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *elem = json_array_get(j, i);
        size_t saved = path_push_index(d, i);
        if (json_is_null(elem))
            return fail(d, -EINVAL, "null is not allowed in an array");
        *count = i + 1; /* the zeroed element frees as nothing if decoding it fails */
        int rc = decode_value(d, f, elem, arr + i * size);
        if (rc < 0)
            return rc;
        path_pop(d, saved);
    }
    return 0;
}

static int decode_field(decoder_t *d, const ProtobufCMessageDescriptor *desc,
                        const ProtobufCFieldDescriptor *f, const json_t *j, ProtobufCMessage *msg) {
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return decode_repeated(d, f, j, msg);
    if (json_is_null(j))
        return 0; /* null = unset, as proto3 JSON */
    void *slot = MEMBER_PTR(msg, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *oneof_case = MEMBER_PTR(msg, f->quantifier_offset);
        if (*oneof_case != 0 && *oneof_case != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(desc, *oneof_case);
            return fail(d, -EINVAL, "only one of a oneof may be set (\"%s\" is set already)",
                        other ? other->name : "?");
        }
        memset(slot, 0, field_value_size(f->type));
        *oneof_case = f->id;
        return decode_value(d, f, j, slot);
    }
    int rc = decode_value(d, f, j, slot);
    if (rc == 0 && f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
        f->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)MEMBER_PTR(msg, f->quantifier_offset) = 1;
    return rc;
}

/* "taskHistoryLimit" -> "task_history_limit"; false when it does not fit. */
static bool camel_to_snake(const char *in, char *out, size_t len) {
    size_t o = 0;
    for (; *in; in++) {
        if (isupper((unsigned char)*in)) {
            if (o + 2 >= len)
                return false;
            out[o++] = '_';
            out[o++] = (char)tolower((unsigned char)*in);
        } else {
            if (o + 1 >= len)
                return false;
            out[o++] = *in;
        }
    }
    out[o] = '\0';
    return true;
}

static const ProtobufCFieldDescriptor *field_by_json_name(const ProtobufCMessageDescriptor *desc,
                                                          const char *key) {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    char snake[128];
    if (!f && camel_to_snake(key, snake, sizeof snake) && strcmp(snake, key))
        f = protobuf_c_message_descriptor_get_field_by_name(desc, snake);
    return f;
}

static int decode_message(decoder_t *d, const ProtobufCMessageDescriptor *desc, const json_t *j,
                          ProtobufCMessage *msg) {
    if (++d->depth > PBJSON_MAX_DEPTH)
        return fail(d, -EINVAL, "nested too deeply");
    unsigned char *seen = calloc(desc->n_fields ? desc->n_fields : 1, 1);
    if (!seen)
        return fail(d, -ENOMEM, "out of memory");
    int rc = 0;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)j, key, value) {
        size_t saved = path_push_field(d, key);
        const ProtobufCFieldDescriptor *f = field_by_json_name(desc, key);
        if (!f) {
            rc = fail(d, -EINVAL, "unknown field of %s", desc->name);
            break;
        }
        if (seen[f - desc->fields]) {
            rc = fail(d, -EINVAL, "given twice (as \"%s\" and \"%s\")", f->name, key);
            break;
        }
        seen[f - desc->fields] = 1;
        if ((rc = decode_field(d, desc, f, value, msg)) < 0)
            break;
        path_pop(d, saved);
    }
    free(seen);
    d->depth--;
    return rc;
}

int pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                  ProtobufCMessage **ret, char *errbuf, size_t errlen) {
    decoder_t d = {.errbuf = errbuf, .errlen = errlen};
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!desc || !json || !ret)
        return fail(&d, -EINVAL, "no message type or no JSON given");
    *ret = NULL;
    if (!json_is_object(json))
        return fail(&d, -EINVAL, "expected a JSON object for %s, got %s", desc->name,
                    json_kind(json));
    ProtobufCMessage *msg = message_alloc(desc);
    if (!msg)
        return fail(&d, -ENOMEM, "out of memory");
    int rc = decode_message(&d, desc, json, msg);
    if (rc < 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return rc;
    }
    *ret = msg;
    return 0;
}

int pbjson_loads(const ProtobufCMessageDescriptor *desc, const char *text, ProtobufCMessage **ret,
                 char *errbuf, size_t errlen) {
    if (ret)
        *ret = NULL;
    if (!text) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "no JSON text given");
        return -EINVAL;
    }
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!j) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "invalid JSON at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        return -EINVAL;
    }
    int rc = pbjson_decode(desc, j, ret, errbuf, errlen);
    json_decref(j);
    return rc;
}

/* ---- descriptor lookup -------------------------------------------------------------------- */

/* Every message of proto/, listed at build time from the generated headers (the Makefile writes
 * build/gen/descriptors.c), so a new message is known without editing this file. Messages only
 * reachable as fields are found too, by walking field descriptors. */
extern const ProtobufCMessageDescriptor *const pbjson_all_messages[];
extern const size_t pbjson_n_all_messages;
#define known_messages pbjson_all_messages
#define N_KNOWN        pbjson_n_all_messages

typedef struct descriptor_walk {
    const ProtobufCMessageDescriptor *visited[512];
    size_t n_visited;
    const char *want;
} descriptor_walk_t;

static const ProtobufCMessageDescriptor *walk_fields(descriptor_walk_t *w,
                                                     const ProtobufCMessageDescriptor *desc) {
    for (size_t i = 0; i < w->n_visited; i++)
        if (w->visited[i] == desc)
            return NULL;
    if (w->n_visited == sizeof w->visited / sizeof w->visited[0])
        return NULL;
    w->visited[w->n_visited++] = desc;
    if (!strcmp(desc->name, w->want))
        return desc;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        if (desc->fields[i].type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const ProtobufCMessageDescriptor *found = walk_fields(w, desc->fields[i].descriptor);
        if (found)
            return found;
    }
    return NULL;
}

const ProtobufCMessageDescriptor *pbjson_find_descriptor(const char *full_name) {
    if (!full_name)
        return NULL;
    if (*full_name == '.') /* protoc's fully qualified spelling */
        full_name++;
    for (size_t i = 0; i < N_KNOWN; i++)
        if (!strcmp(known_messages[i]->name, full_name))
            return known_messages[i];
    descriptor_walk_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->want = full_name;
    const ProtobufCMessageDescriptor *found = NULL;
    for (size_t i = 0; !found && i < N_KNOWN; i++)
        found = walk_fields(w, known_messages[i]);
    free(w);
    return found;
}
