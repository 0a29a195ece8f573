/* record — see record.h for the layout. The CRC32C is a plain byte-at-a-time table: records are
 * small (an object is a few KiB) and the fsync of each group commit costs far more than the
 * checksum, so a hardware or slicing-by-8 implementation would not show up in a profile. */
#include "record.h"

#include <errno.h>
#include <string.h>

static uint32_t crc_table[256];
static bool crc_ready;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = true;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len) {
    if (!crc_ready)
        crc_init();
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

void record_put_be64(uint8_t *out, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t record_get_be64(const uint8_t *in) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}

static uint32_t record_crc(enum record_type type, const void *key, size_t klen,
                           const uint8_t *payload, size_t plen) {
    uint8_t t = (uint8_t)type;
    uint32_t crc = crc32c(0, &t, 1);
    crc = crc32c(crc, key, klen);
    return crc32c(crc, payload, plen);
}

void record_encode(arena_t *a, enum record_type type, const void *key, size_t klen,
                   const ProtobufCMessage *msg, uint8_t **ret, size_t *ret_len) {
    size_t plen = msg ? protobuf_c_message_get_packed_size(msg) : 0;
    uint8_t *buf = arena_alloc(a, RECORD_HEADER_LEN + plen);
    if (msg)
        protobuf_c_message_pack(msg, buf + RECORD_HEADER_LEN);
    uint32_t crc = record_crc(type, key, klen, buf + RECORD_HEADER_LEN, plen);
    buf[0] = (uint8_t)type;
    buf[1] = (uint8_t)crc;
    buf[2] = (uint8_t)(crc >> 8);
    buf[3] = (uint8_t)(crc >> 16);
    buf[4] = (uint8_t)(crc >> 24);
    *ret = buf;
    *ret_len = RECORD_HEADER_LEN + plen;
}

void record_encode_kv(arena_t *a, const Shoal__Store__KeyValue *kv, uint8_t **ret,
                      size_t *ret_len) {
    Shoal__Store__KeyValue copy = *kv;
    copy.key = (char *)protobuf_c_empty_string;
    record_encode(a, RECORD_KV, kv->key, strlen(kv->key), &copy.base, ret, ret_len);
}

int record_check(enum record_type type, const void *key, size_t klen, const uint8_t *buf,
                 size_t len, const uint8_t **ret_payload, size_t *ret_payload_len) {
    if (!buf || len < RECORD_HEADER_LEN || buf[0] != (uint8_t)type)
        return -EIO;
    uint32_t want =
        (uint32_t)buf[1] | (uint32_t)buf[2] << 8 | (uint32_t)buf[3] << 16 | (uint32_t)buf[4] << 24;
    const uint8_t *payload = buf + RECORD_HEADER_LEN;
    size_t plen = len - RECORD_HEADER_LEN;
    if (record_crc(type, key, klen, payload, plen) != want)
        return -EIO;
    *ret_payload = payload;
    *ret_payload_len = plen;
    return 0;
}

int record_decode(arena_t *a, enum record_type type, const ProtobufCMessageDescriptor *desc,
                  const void *key, size_t klen, const uint8_t *buf, size_t len,
                  ProtobufCMessage **ret) {
    const uint8_t *payload;
    size_t plen;
    int rc = record_check(type, key, klen, buf, len, &payload, &plen);
    if (rc < 0)
        return rc;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, arena_allocator(a), plen, payload);
    if (!m)
        return -EIO;
    *ret = m;
    return 0;
}

int record_decode_kv(arena_t *a, const void *key, size_t klen, const uint8_t *buf, size_t len,
                     Shoal__Store__KeyValue **ret) {
    ProtobufCMessage *m;
    if (klen == 0 || memchr(key, '\0', klen))
        return -EIO;
    int rc =
        record_decode(a, RECORD_KV, &shoal__store__key_value__descriptor, key, klen, buf, len, &m);
    if (rc < 0)
        return rc;
    Shoal__Store__KeyValue *kv = (Shoal__Store__KeyValue *)m;
    if (kv->version <= 0 || kv->create_revision <= 0 || kv->mod_revision < kv->create_revision ||
        kv->lease < 0)
        return -EIO;
    kv->key = arena_strndup(a, key, klen);
    *ret = kv;
    return 0;
}

int record_decode_event(arena_t *a, const void *key, size_t klen, const uint8_t *buf, size_t len,
                        Shoal__Store__Event **ret) {
    ProtobufCMessage *m;
    int64_t rev;
    uint32_t seq;
    if (record_event_key_parse(key, klen, &rev, &seq) < 0)
        return -EIO;
    int rc =
        record_decode(a, RECORD_EVENT, &shoal__store__event__descriptor, key, klen, buf, len, &m);
    if (rc < 0)
        return rc;
    Shoal__Store__Event *ev = (Shoal__Store__Event *)m;
    if (!ev->kv || !ev->kv->key || !*ev->kv->key || ev->kv->mod_revision != rev ||
        (ev->type != SHOAL__STORE__EVENT__TYPE__PUT &&
         ev->type != SHOAL__STORE__EVENT__TYPE__DELETE) ||
        (ev->prev_kv && (!ev->prev_kv->key || strcmp(ev->prev_kv->key, ev->kv->key))))
        return -EIO;
    *ret = ev;
    return 0;
}

int record_decode_meta(arena_t *a, const uint8_t *buf, size_t len, Shoal__Store__StoredMeta **ret) {
    ProtobufCMessage *m;
    int rc = record_decode(a, RECORD_META, &shoal__store__stored_meta__descriptor, RECORD_META_KEY,
                           strlen(RECORD_META_KEY), buf, len, &m);
    if (rc < 0)
        return rc;
    Shoal__Store__StoredMeta *meta = (Shoal__Store__StoredMeta *)m;
    if (meta->revision < 0 || meta->compact_revision < 0 ||
        meta->compact_revision > meta->revision || meta->next_lease_id < 0)
        return -EIO;
    *ret = meta;
    return 0;
}

int record_decode_lease(arena_t *a, const void *key, size_t klen, const uint8_t *buf, size_t len,
                        Shoal__Store__StoredLease **ret) {
    ProtobufCMessage *m;
    int64_t id;
    if (record_lease_key_parse(key, klen, &id) < 0)
        return -EIO;
    int rc = record_decode(a, RECORD_LEASE, &shoal__store__stored_lease__descriptor, key, klen, buf,
                           len, &m);
    if (rc < 0)
        return rc;
    Shoal__Store__StoredLease *lease = (Shoal__Store__StoredLease *)m;
    if (lease->id != id || lease->ttl_ms <= 0)
        return -EIO;
    *ret = lease;
    return 0;
}

void record_event_key(uint8_t out[RECORD_EVENT_KEY_LEN], int64_t revision, uint32_t seq) {
    record_put_be64(out, (uint64_t)revision);
    out[8] = (uint8_t)(seq >> 24);
    out[9] = (uint8_t)(seq >> 16);
    out[10] = (uint8_t)(seq >> 8);
    out[11] = (uint8_t)seq;
}

int record_event_key_parse(const void *key, size_t klen, int64_t *ret_revision, uint32_t *ret_seq) {
    if (klen != RECORD_EVENT_KEY_LEN)
        return -EINVAL;
    const uint8_t *k = key;
    uint64_t rev = record_get_be64(k);
    if (rev == 0 || rev > INT64_MAX)
        return -EINVAL;
    *ret_revision = (int64_t)rev;
    *ret_seq = (uint32_t)k[8] << 24 | (uint32_t)k[9] << 16 | (uint32_t)k[10] << 8 | k[11];
    return 0;
}

void record_lease_key(uint8_t out[RECORD_LEASE_KEY_LEN], int64_t id) {
    memcpy(out, RECORD_LEASE_PREFIX, sizeof RECORD_LEASE_PREFIX - 1);
    record_put_be64(out + sizeof RECORD_LEASE_PREFIX - 1, (uint64_t)id);
}

int record_lease_key_parse(const void *key, size_t klen, int64_t *ret_id) {
    if (klen != RECORD_LEASE_KEY_LEN || memcmp(key, RECORD_LEASE_PREFIX, 6))
        return -EINVAL;
    uint64_t id = record_get_be64((const uint8_t *)key + 6);
    if (id == 0 || id > INT64_MAX)
        return -EINVAL;
    *ret_id = (int64_t)id;
    return 0;
}

uint8_t *record_lk_key(arena_t *a, int64_t id, const char *key, size_t *ret_len) {
    size_t klen = key ? strlen(key) : 0;
    uint8_t *out = arena_alloc(a, RECORD_LK_PREFIX_LEN + klen + 1);
    memcpy(out, RECORD_LK_PREFIX, 3);
    record_put_be64(out + 3, (uint64_t)id);
    if (klen)
        memcpy(out + RECORD_LK_PREFIX_LEN, key, klen);
    *ret_len = RECORD_LK_PREFIX_LEN + klen;
    return out;
}
