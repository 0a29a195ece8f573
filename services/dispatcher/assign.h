/* assign — per-node assignment sets built from the /tasks watch, their versions, and the parked
 * dispatcher.Assignments long-polls waiting for a set to change. No I/O; see assign.c. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dispatcher.pb-c.h"
#include "objects.pb-c.h"

#define ASSIGN_MAX_WAIT_MS 30000 /* longest an Assignments call is parked */

typedef struct assign assign_t;

assign_t *assign_new(void);
/* Frees every task; waiters still parked are dropped without a call (drain them first). */
void assign_destroy(assign_t **self_p);

/* Forgets every task (a re-list follows). Every node's version becomes `base_version`, the
 * store revision the new list is read at, until its set changes again. Waiters stay parked. */
void assign_reset(assign_t *self, int64_t base_version);

/* Task `task_id` (the id of its key /tasks/<id>) has the value `task`, written at store revision
 * `mod_revision`. Takes ownership of `task` (an unpacked shoal.Task, freed with
 * shoal__task__free_unpacked) in every case. A task is in node N's set when node_id == N and
 * status.state >= ASSIGNED. Returns the number of node sets whose version moved (0, 1, or 2 when
 * the task moved between nodes), or -errno.
 *
 * A change a set's agent made itself (only status, networks or meta differ, and the state is past
 * ASSIGNED) keeps the version: agents are not woken to be told what they just reported. */
int assign_task_put(assign_t *self, const char *task_id, Shoal__Task *task, int64_t mod_revision);
/* The task was deleted at store revision `revision`. Returns the number of versions moved. */
int assign_task_delete(assign_t *self, const char *task_id, int64_t revision);

/* The version of node_id's set: the store revision of the last change to it, or the base. */
uint64_t assign_version(const assign_t *self, const char *node_id);
/* How many tasks are in node_id's set. */
size_t assign_count(const assign_t *self, const char *node_id);

/* A task of some node's set, with the mod revision it was seen at; NULL when no set holds it. */
const Shoal__Task *assign_task(const assign_t *self, const char *task_id,
                               int64_t *ret_mod_revision);

/* Fills resp->version and resp->tasks (the array is malloc'd, the tasks borrowed from the
 * table: send before changing the table, then free the array with assign_response_clear). */
int assign_response(const assign_t *self, const char *node_id,
                    Shoal__Dispatcher__AssignmentsResponse *resp);
void assign_response_clear(Shoal__Dispatcher__AssignmentsResponse *resp);

/* Parks an opaque `waiter` (the daemon's bus call) until node_id's version differs from
 * `known_version` or the monotonic time reaches `deadline_ms`. */
int assign_wait(assign_t *self, const char *node_id, uint64_t known_version, int64_t deadline_ms,
                void *waiter);
/* Hands back every waiter whose set changed or whose deadline passed; each is removed before
 * `fn` sees it. Returns how many. */
typedef void(assign_wake_fn)(void *ctx, void *waiter, const char *node_id);
size_t assign_wake(assign_t *self, int64_t now_ms, assign_wake_fn *fn, void *ctx);
/* Hands back every parked waiter (shutdown). */
size_t assign_drain(assign_t *self, assign_wake_fn *fn, void *ctx);
size_t assign_waiters(const assign_t *self);
