/* arena — bump allocator for one unit of work: a store request or group commit, a CLI command,
 * one poll of a wait loop.
 *
 * Decoded records, response messages and scratch buffers of one unit are allocated here and freed
 * together with arena_reset()/arena_destroy(), so hot paths never free piecemeal and never leak on
 * an error path. arena_allocator() hands the arena to protobuf-c: unpacked messages live in the
 * arena and must NOT be passed to protobuf_c_message_free_unpacked(). Messages built by hand in
 * the arena and messages unpacked into it may be mixed freely in one tree (a read-modify-write of
 * a spec), since nothing in it is ever freed on its own. Not thread-safe: one arena, one thread. */
#pragma once
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct arena arena_t;

/* block_size: bytes per block (0 = 64 KiB); larger requests get a block of their own. NULL when
 * out of memory. */
arena_t *arena_new(size_t block_size);
void arena_destroy(arena_t **self_p);
/* Frees every allocation, keeps the first block for reuse. */
void arena_reset(arena_t *self);

/* Zeroed memory aligned for any type. Out of memory aborts the process (like CZMQ's zmalloc): a
 * store that cannot allocate cannot make progress safely, and restarting replays nothing. */
void *arena_alloc(arena_t *self, size_t size);
void *arena_memdup(arena_t *self, const void *data, size_t len);
char *arena_strdup(arena_t *self, const char *s);
char *arena_strndup(arena_t *self, const char *s, size_t len);
char *arena_printf(arena_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes handed out since the last reset. */
size_t arena_used(const arena_t *self);

/* A protobuf-c allocator over this arena (free is a no-op). */
ProtobufCAllocator *arena_allocator(arena_t *self);

/* A growable array of pointers in the arena (grows by doubling; old storage is abandoned). */
typedef struct arena_vec {
    void **items;
    size_t n, cap;
} arena_vec_t;
void arena_vec_push(arena_t *self, arena_vec_t *vec, void *item);

/* Appends to an array held as (items, count) with no capacity — a protobuf-c repeated field
 * (`char **env; size_t n_env`), possibly unpacked by protobuf-c with exactly `count` slots — by
 * copying it into a one-longer array in the arena. Linear per push: for the short repeated fields
 * of a message; long lists belong in an arena_vec_t. */
void arena_push_ptr(arena_t *self, void ***items, size_t *count, void *item);
#define ARENA_PUSH(arena, items, count, item)                                                      \
    arena_push_ptr((arena), (void ***)(items), (count), (void *)(item))
