/* resolver — shoal-dns's name table, kept current from store events (see resolver.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RESOLVER_TASK_ADDRS_MAX 4 /* IPv4 addresses kept per task on the network */

typedef struct resolver resolver_t;

/* A table answering for the tasks attached to `network` (NetworkAttachment.network, "shoal"). */
resolver_t *resolver_new(const char *network);
void resolver_destroy(resolver_t **self_p);
/* Forgets everything (before re-listing the store). */
void resolver_clear(resolver_t *self);

/* Applies one store event: a PUT of `key` with its value, or a DELETE (value NULL). Keys other
 * than /services/<id> and /tasks/<id> are ignored. Returns 0, or -EINVAL when the value does not
 * decode (the object is then dropped from the table, as if deleted). */
int resolver_apply(resolver_t *self, const char *key, bool deleted, const uint8_t *value,
                   size_t len);

/* Looks `name` up ("web", "web.", "tasks.web", any case). 0 when it is a cluster name: the IPv4
 * addresses (network byte order) of its running tasks go to addrs[cap], their number (possibly
 * 0, possibly more than cap) to *ret_n. -ENOENT when the name is not a cluster name. */
int resolver_lookup(const resolver_t *self, const char *name, uint32_t *addrs, size_t cap,
                    size_t *ret_n);

size_t resolver_service_count(const resolver_t *self);
size_t resolver_task_count(const resolver_t *self); /* running tasks with an address */
