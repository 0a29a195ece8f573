/* arena — see arena.h. A singly linked list of blocks; allocation bumps an offset in the head
 * block and starts a new block when it does not fit. Oversized requests (over a quarter of a
 * block) get a dedicated block linked behind the head so the head keeps serving small
 * allocations. Every allocation is rounded up to 16 bytes, so every pointer handed out is aligned
 * for any type, and handed out zeroed.
 *
 * Users: shoal-store (per request and per group commit), the shoal CLI (per command, and per poll
 * of its wait loops). The one place lib/ logs above debug is the abort on exhausted memory: the
 * process is about to die and the line says why. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define ARENA_ALIGN         16
#define ARENA_DEFAULT_BLOCK (64 * 1024)

typedef struct arena_block {
    struct arena_block *next;
    size_t size, used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
} arena_block_t;

struct arena {
    arena_block_t *head;
    arena_block_t *first; /* kept across resets */
    size_t block_size;
    size_t used;
    ProtobufCAllocator allocator;
};

static void *arena_pb_alloc(void *data, size_t size) {
    return arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *ptr) {
    (void)data;
    (void)ptr;
}

static arena_block_t *block_new(size_t size) {
    arena_block_t *b = malloc(sizeof *b + size);
    if (!b) {
        log_err("out of memory allocating arena block bytes=%zu", size);
        abort();
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

arena_t *arena_new(size_t block_size) {
    arena_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->block_size = block_size ? block_size : ARENA_DEFAULT_BLOCK;
    self->head = self->first = block_new(self->block_size);
    self->allocator.alloc = arena_pb_alloc;
    self->allocator.free = arena_pb_free;
    self->allocator.allocator_data = self;
    return self;
}

static void blocks_free(arena_block_t *b) {
    while (b) {
        arena_block_t *next = b->next;
        free(b);
        b = next;
    }
}

void arena_destroy(arena_t **self_p) {
    arena_t *self = *self_p;
    if (!self)
        return;
    blocks_free(self->head);
    free(self);
    *self_p = NULL;
}

void arena_reset(arena_t *self) {
    arena_block_t *b = self->head;
    while (b) {
        arena_block_t *next = b->next;
        if (b != self->first)
            free(b);
        b = next;
    }
    self->first->used = 0;
    self->first->next = NULL;
    self->head = self->first;
    self->used = 0;
}

void *arena_alloc(arena_t *self, size_t size) {
    size_t need = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    self->used += need;
    arena_block_t *h = self->head;
    if (h->size - h->used >= need) {
        void *p = h->data + h->used;
        h->used += need;
        memset(p, 0, size);
        return p;
    }
    if (need > self->block_size / 4) {
        /* a big allocation: own block, behind the head */
        arena_block_t *b = block_new(need);
        b->used = need;
        b->next = h->next;
        h->next = b;
        memset(b->data, 0, size);
        return b->data;
    }
    arena_block_t *b = block_new(self->block_size);
    b->next = h;
    self->head = b;
    b->used = need;
    memset(b->data, 0, size);
    return b->data;
}

void *arena_memdup(arena_t *self, const void *data, size_t len) {
    void *p = arena_alloc(self, len ? len : 1);
    if (len)
        memcpy(p, data, len);
    return p;
}

char *arena_strndup(arena_t *self, const char *s, size_t len) {
    char *p = arena_alloc(self, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(arena_t *self, const char *s) {
    return arena_strndup(self, s, strlen(s));
}

char *arena_printf(arena_t *self, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *p = arena_alloc(self, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

size_t arena_used(const arena_t *self) {
    return self->used;
}

ProtobufCAllocator *arena_allocator(arena_t *self) {
    return &self->allocator;
}

void arena_vec_push(arena_t *self, arena_vec_t *vec, void *item) {
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 8;
        void **items = arena_alloc(self, cap * sizeof *items);
        if (vec->n)
            memcpy(items, vec->items, vec->n * sizeof *items);
        vec->items = items;
        vec->cap = cap;
    }
    vec->items[vec->n++] = item;
}

void arena_push_ptr(arena_t *self, void ***items, size_t *count, void *item) {
    void **grown = arena_alloc(self, (*count + 1) * sizeof *grown);
    if (*count)
        memcpy(grown, *items, *count * sizeof *grown);
    grown[(*count)++] = item;
    *items = grown;
}
