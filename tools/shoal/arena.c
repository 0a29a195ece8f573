/* arena — bump allocation for the CLI's short-lived objects.
 *
 * A command allocates a handful of strings and messages and exits; tracking each free would be
 * noise and a source of bugs when decoded replies and self-built sub-messages are mixed in one
 * protobuf tree. Blocks of 64 KiB (or one block per large allocation) are chained and released
 * together by arena_reset()/arena_destroy(). The progress loop resets its own arena every poll so
 * a two-minute wait does not grow without bound. */
#include <stdlib.h>
#include <string.h>

#include "shoal.h"

#define ARENA_BLOCK_SIZE (64 * 1024)
#define ARENA_ALIGN      16

typedef struct arena_block {
    struct arena_block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    max_align_t data[];
} arena_block_t;

struct arena {
    arena_block_t *blocks;
    ProtobufCAllocator allocator;
};

static void *arena_pb_alloc(void *data, size_t size) {
    return arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *ptr) {
    (void)data;
    (void)ptr;
}

arena_t *arena_new(void) {
    arena_t *self = calloc(1, sizeof *self);
    if (!self)
        abort();
    self->allocator.alloc = arena_pb_alloc;
    self->allocator.free = arena_pb_free;
    self->allocator.allocator_data = self;
    return self;
}

void arena_reset(arena_t *self) {
    arena_block_t *b = self->blocks;
    while (b) {
        arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    self->blocks = NULL;
}

void arena_destroy(arena_t **self_p) {
    if (!self_p || !*self_p)
        return;
    arena_reset(*self_p);
    free(*self_p);
    *self_p = NULL;
}

void *arena_alloc(arena_t *self, size_t size) {
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (size == 0)
        size = ARENA_ALIGN;
    arena_block_t *b = self->blocks;
    if (!b || b->size - b->used < size) {
        size_t cap = size > ARENA_BLOCK_SIZE / 4 ? size : ARENA_BLOCK_SIZE;
        b = malloc(sizeof *b + cap);
        if (!b)
            abort();
        b->size = cap;
        b->used = 0;
        if (cap == size && self->blocks) {
            /* A large allocation gets a block of its own behind the current one, so the
             * current block's free space stays usable. */
            b->next = self->blocks->next;
            self->blocks->next = b;
        } else {
            b->next = self->blocks;
            self->blocks = b;
        }
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *arena_strdup(arena_t *self, const char *s) {
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    return memcpy(arena_alloc(self, n), s, n);
}

char *arena_printf(arena_t *self, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *buf = arena_alloc(self, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return buf;
}

ProtobufCAllocator *arena_protobuf_allocator(arena_t *self) {
    return &self->allocator;
}

void arena_push_ptr(arena_t *self, void ***array, size_t *count, void *item) {
    void **grown = arena_alloc(self, (*count + 1) * sizeof *grown);
    if (*count)
        memcpy(grown, *array, *count * sizeof *grown);
    grown[(*count)++] = item;
    *array = grown;
}

void strv_push(arena_t *arena, strv_t *list, const char *s) {
    arena_push_ptr(arena, (void ***)&list->v, &list->n, (void *)s);
}
