/* executor — how the agent runs a task's container, independent of the runtime (DESIGN §1).
 *
 * Modelled on SwarmKit's agent/exec Executor/Controller, flattened into one table of blocking
 * calls. The agent's worker decides *which* call comes next (controller.c); an executor only
 * performs it. Implementations:
 *   docker  (docker_executor.c) — the Docker Engine API over its unix socket;
 *   sim     (sim_executor.c)    — in-memory containers for scale tests, many nodes per process.
 *
 * Threading: calls block (a pull may take minutes), so the agent runs them on a pool of threads
 * (pool.c) and each thread opens its own executor_t from the factory; one executor_t is only
 * ever used by one thread at a time. A factory whose instances share state (sim) must lock it.
 * `interrupt` is the one call made from another thread: it makes the call in progress, and
 * every later one, fail fast with -ECANCELED (used at shutdown).
 *
 * Events: a factory may offer an event source, an actor whose pipe carries
 *   "EVENT" kind task_id container_id exit_code(int)    kind = start | die | oom | destroy |
 *                                                              healthy | unhealthy
 *   "RESYNC"                                            events may have been lost: re-list
 * read with executor_event_recv(). The sim executor has none: its containers never change by
 * themselves, so there is nothing to tell.
 *
 * Every call returns 0 or -errno, with one line for people in err (the runtime's own message,
 * e.g. the Engine's "No such image: x:latest"), and never blocks forever. */
#pragma once
#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "objects.pb-c.h"

#define EXECUTOR_ID_MAX      80
#define EXECUTOR_TASK_ID_MAX 64
#define EXECUTOR_ERR_MAX     512
#define EXECUTOR_NETWORK     "shoal" /* the network every task container joins */

typedef struct executor executor_t;

/* What the runtime knows of one task's container. */
typedef struct executor_container {
    char id[EXECUTOR_ID_MAX];
    char task_id[EXECUTOR_TASK_ID_MAX]; /* "" when the container has no task label */
    char node_id[EXECUTOR_TASK_ID_MAX]; /* the node whose agent created it */
    char status[16]; /* created | running | paused | restarting | exited | dead | removing */
    bool running;
    bool oom_killed;
    int exit_code; /* -1 when unknown (lists) */
    int pid;
    char ip[48]; /* on EXECUTOR_NETWORK, "" when none (or unknown) */
    char error[256];
    /* The runtime's health check verdict: "" when the container has no health check (or a list
     * did not say), else starting | healthy | unhealthy. */
    char health[16];
} executor_container_t;

typedef struct executor_ops {
    const char *name;
    void (*close)(executor_t *self);
    void (*interrupt)(executor_t *self); /* any thread */
    /* The node as the runtime sees it (hostname, platform, resources, engine). *ret is a
     * message allocated like an unpacked one: free with protobuf_c_message_free_unpacked. */
    int (*describe)(executor_t *self, Shoal__NodeDescription **ret, char *err, size_t errlen);
    /* Makes the task runnable here: its image (per the spec's pull policy) and network. */
    int (*prepare)(executor_t *self, const Shoal__Task *task, char *err, size_t errlen);
    /* Creates the task's container (not started). A container that already exists for the same
     * task (an earlier attempt) is returned rather than an error. */
    int (*create)(executor_t *self, const Shoal__Task *task, char *ret_id, size_t idlen, char *err,
                  size_t errlen);
    int (*start)(executor_t *self, const char *container_id, char *err, size_t errlen);
    /* Asks the container to stop, killing it after grace_s seconds. Stopped already: 0. */
    int (*stop)(executor_t *self, const char *container_id, int grace_s, char *err, size_t errlen);
    /* Removes the container, stopping it first if needed. Gone already: -ENOENT. */
    int (*remove)(executor_t *self, const char *container_id, char *err, size_t errlen);
    /* -ENOENT when the container does not exist. */
    int (*inspect)(executor_t *self, const char *container_id, executor_container_t *ret, char *err,
                   size_t errlen);
    /* Every task container of node `node_id` (running or not): only those, since agents of
     * other nodes or clusters may share the runtime (tests, sim). *ret is malloc'd. */
    int (*list)(executor_t *self, const char *node_id, executor_container_t **ret, size_t *ret_n,
                char *err, size_t errlen);
} executor_ops_t;

/* Implementations embed this first. */
struct executor {
    const executor_ops_t *ops;
};

/* Copied by value: implementations keep small arguments in `path`, shared state behind `arg`. */
typedef struct executor_factory {
    const char *name;
    /* A new instance for the calling thread; NULL on failure. */
    executor_t *(*open)(const struct executor_factory *f);
    /* The event source actor, or NULL when the executor has none. */
    zactor_t *(*events_new)(const struct executor_factory *f);
    void *arg;
    char path[256];
} executor_factory_t;

enum executor_event_kind {
    EXECUTOR_EVENT_START = 1,
    EXECUTOR_EVENT_DIE,
    EXECUTOR_EVENT_OOM,
    EXECUTOR_EVENT_DESTROY,
    EXECUTOR_EVENT_RESYNC,
    EXECUTOR_EVENT_HEALTHY,   /* the health check passed (after starting, or after failing) */
    EXECUTOR_EVENT_UNHEALTHY, /* the health check failed `retries` times in a row */
};

typedef struct executor_event {
    enum executor_event_kind kind;
    char task_id[EXECUTOR_TASK_ID_MAX];
    char container_id[EXECUTOR_ID_MAX];
    int exit_code; /* die; -1 otherwise */
} executor_event_t;

/* Reads one message of an event source's pipe. -EINVAL for a message that is none of the above
 * (it is consumed), -EINTR when the pipe was interrupted. */
int executor_event_recv(zsock_t *pipe, executor_event_t *ret);
const char *executor_event_kind_name(enum executor_event_kind kind);

static inline void executor_close(executor_t **self_p) {
    if (self_p && *self_p) {
        (*self_p)->ops->close(*self_p);
        *self_p = NULL;
    }
}

/* ---- docker ------------------------------------------------------------------------------ */

/* A factory for the Docker executor on `socket_path` (NULL = /var/run/docker.sock). The path is
 * copied into the factory, which needs no destructor. */
void executor_docker_factory(executor_factory_t *ret, const char *socket_path);

/* The Engine's container config (JSON body of POST /containers/create) for a task, and the
 * container's name: <service>.<slot>.<task id>, or <service>.<node id>.<task id> when slot = 0.
 * Swarm's mapping: spec.command replaces the image's entrypoint, spec.args its Cmd.
 * NULL (errno) on allocation failure or a task without a container spec. */
json_t *executor_docker_config(const Shoal__Task *task, char *ret_name, size_t namelen);
/* Stop grace in seconds for a spec (default 10 s, rounded up). */
int executor_stop_grace_s(const Shoal__Task *task);

/* ---- sim ---------------------------------------------------------------------------------
 *
 * In-memory containers (sim_executor.c) for `shoal-agent --sim-nodes N`: create/start/stop are
 * instant and only change a table; start fails with probability `failure_rate` (the task ends
 * FAILED, "sim: simulated start failure"). The table is shared by every node of the process
 * (like one Engine shared by several agents), filtered by node id in list(), and locked, so
 * instances may live on any thread. Latency is not the executor's business: the agent's pool
 * delays completions (pool_set_latency) so that nothing blocks. */
typedef struct sim_runtime sim_runtime_t;

/* seed 0 = from the clock. NULL on allocation failure. */
sim_runtime_t *sim_runtime_new(double failure_rate, uint64_t seed);
void sim_runtime_destroy(sim_runtime_t **self_p);
/* Containers in the table, and how many of them run. */
size_t sim_runtime_containers(sim_runtime_t *self);
size_t sim_runtime_running(sim_runtime_t *self);
/* A factory whose instances use `runtime` (not owned: it must outlive every instance). */
void executor_sim_factory(executor_factory_t *ret, sim_runtime_t *runtime);
