/* docker — a client of the Docker Engine API over its unix socket (libcurl), and the events
 * follower actor. Used by the docker executor (docker_executor.c); nothing here knows tasks.
 *
 * A docker_t owns one curl handle and is not thread-safe: each thread that calls the Engine
 * (the agent's worker pool, the events follower) opens its own. The API version is discovered
 * once from /_ping's Api-Version header and every path is prefixed with /v<version>.
 *
 * Every call returns 0 or -errno and, on failure, one line in `err` (the Engine's `message`
 * field when it sent one): -ENOENT (404), -EEXIST (409), -EINVAL (400), -EACCES (401/403),
 * -EIO (500 and other HTTP errors), -ECONNREFUSED (no daemon at the socket), -ETIMEDOUT,
 * -ECANCELED (docker_interrupt()), -EPROTO (a reply we could not parse), -ENOMEM. */
#pragma once
#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DOCKER_DEFAULT_SOCKET "/var/run/docker.sock"
#define DOCKER_LABEL_TASK_ID  "shoal.task.id"
#define DOCKER_LABEL_NODE_ID  "shoal.node.id"
#define DOCKER_ID_MAX         80 /* container ids are 64 hex characters */
#define DOCKER_TASK_ID_MAX    64

typedef struct docker docker_t;

typedef struct docker_info {
    int ncpu;
    int64_t mem_total;
    char name[256]; /* the host name the Engine reports */
    char server_version[64];
    char os_type[32];
    char architecture[32];
    char api_version[16];
    char **labels; /* "key=value", nlabels of them; freed by docker_info_clear() */
    size_t nlabels;
} docker_info_t;

typedef struct docker_container {
    char id[DOCKER_ID_MAX];
    char name[256];                   /* without the leading '/' */
    char task_id[DOCKER_TASK_ID_MAX]; /* label shoal.task.id, "" when absent */
    char node_id[DOCKER_TASK_ID_MAX]; /* label shoal.node.id, "" when absent */
    char status[16];                  /* created | running | paused | restarting | exited | dead */
    bool running;
    bool oom_killed;
    int exit_code; /* -1 when unknown (list) */
    int pid;
    char ip[48];     /* address on the network given to docker_parse_inspect (inspect only) */
    char error[256]; /* State.Error */
    char health[16]; /* State.Health.Status (inspect only): "" | starting | healthy | unhealthy */
} docker_container_t;

enum docker_event_kind {
    DOCKER_EVENT_START = 1,
    DOCKER_EVENT_DIE,
    DOCKER_EVENT_OOM,
    DOCKER_EVENT_DESTROY,
    DOCKER_EVENT_HEALTHY,   /* Action "health_status: healthy" */
    DOCKER_EVENT_UNHEALTHY, /* Action "health_status: unhealthy" */
};

typedef struct docker_event {
    enum docker_event_kind kind;
    char task_id[DOCKER_TASK_ID_MAX];
    char container_id[DOCKER_ID_MAX];
    int exit_code; /* die only; -1 otherwise */
} docker_event_t;

/* Not connected yet: the first call pings. NULL on allocation failure. */
docker_t *docker_new(const char *socket_path);
void docker_destroy(docker_t **self_p);
/* From any thread: the call in progress (and every later one) fails with -ECANCELED. */
void docker_interrupt(docker_t *self);
const char *docker_socket_path(const docker_t *self);
/* "1.41" once pinged, else "". */
const char *docker_api_version(const docker_t *self);
/* HTTP requests made and failed (transport or HTTP >= 400) by this handle. */
uint64_t docker_requests_total(const docker_t *self);
uint64_t docker_errors_total(const docker_t *self);

int docker_ping(docker_t *self, char *err, size_t errlen);
int docker_info(docker_t *self, docker_info_t *ret, char *err, size_t errlen);
void docker_info_clear(docker_info_t *info);

/* 0 when the image is present, -ENOENT when not. */
int docker_image_inspect(docker_t *self, const char *image, char *err, size_t errlen);
/* Pulls "name[:tag|@digest]" (tag latest when none). Errors reported inside the progress stream
 * count as failures; err gets the Engine's text. */
int docker_image_pull(docker_t *self, const char *image, char *err, size_t errlen);
/* Creates the bridge network `name` labelled shoal.network=true unless it exists. */
int docker_network_ensure(docker_t *self, const char *name, char *err, size_t errlen);

/* POST /containers/create?name=NAME with `config` (not stolen). */
int docker_container_create(docker_t *self, const char *name, const json_t *config, char *ret_id,
                            size_t idlen, char *err, size_t errlen);
/* Starting a running container or stopping a stopped one is not an error. */
int docker_container_start(docker_t *self, const char *id, char *err, size_t errlen);
int docker_container_stop(docker_t *self, const char *id, int timeout_s, char *err, size_t errlen);
int docker_container_kill(docker_t *self, const char *id, const char *signal, char *err,
                          size_t errlen);
int docker_container_remove(docker_t *self, const char *id, bool force, char *err, size_t errlen);
/* `network` names the network whose IP goes to ret->ip (may be NULL). */
int docker_container_inspect(docker_t *self, const char *id, const char *network,
                             docker_container_t *ret, char *err, size_t errlen);
/* Every container (running or not) carrying all of `labels` (each a key, or key=value; at most
 * 8). *ret is malloc'd. */
int docker_container_list(docker_t *self, const char *const *labels, size_t nlabels,
                          docker_container_t **ret, size_t *ret_n, char *err, size_t errlen);

/* ---- parsers: pure, bounded, fuzzed (tests/fuzz/fuzz_agent_events.c) -------------------- */

/* One line of /events. 0 with *ret filled for a start/die/oom/destroy/health_status event of a
 * container carrying shoal.task.id; -ENOENT for any other well-formed event (exec_*, a health
 * status other than healthy/unhealthy); -EINVAL for bad input. */
int docker_parse_event(const char *line, size_t len, docker_event_t *ret);
/* A /containers/{id}/json body. -EINVAL when it is not an object with an Id. */
int docker_parse_inspect(const char *body, size_t len, const char *network,
                         docker_container_t *ret);
/* A /containers/json body. */
int docker_parse_list(const char *body, size_t len, docker_container_t **ret, size_t *ret_n);
/* A /info body. */
int docker_parse_info(const char *body, size_t len, docker_info_t *ret);

/* ---- events follower ---------------------------------------------------------------------
 *
 * An actor (own thread, own curl handle) that streams /events?filters={"type":["container"],
 * "label":["shoal.task.id"],"event":["start","die","oom","destroy","health_status"]} (health
 * checks' exec_* events are filtered out by the Engine) and sends on its pipe:
 *   "EVENT" kind(string: start|die|oom|destroy|healthy|unhealthy) task_id container_id
 *           exit_code(int)
 *   "RESYNC"   after every (re)connection: events may have been missed, list containers again
 * It reconnects with back-off (100 ms doubling to 5 s) when the stream breaks. $TERM ends it. */
zactor_t *docker_events_new(const char *socket_path);
const char *docker_event_kind_name(enum docker_event_kind kind);
