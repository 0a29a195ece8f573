/* agent — shoal-agent's manager object: owns the executor pool, the worker (task table), the
 * executor's event follower, the dispatcher session (register, heartbeat, status reports on
 * the main connection; assignments on the poller's), and serves agent.Tasks, bus.Health and
 * bus.Stats. main.c only parses flags and hands them here. */
#pragma once
#include <limits.h>

#include "daemon.h"

typedef struct agent_opts {
    char dispatcher_endpoint[PATH_MAX + 32]; /* "" = config_rpc_endpoint(cfg, "dispatcher") */
    char docker_socket[PATH_MAX];            /* "" = /var/run/docker.sock */
    char addr[64];                           /* "" = first non-loopback IPv4 */
    int concurrency;                         /* executor threads, default 8 */
    char node_id_file[64]; /* under <state>/, "" = agent/node_id (a second agent needs its own) */
} agent_opts_t;

typedef struct agent agent_t;

/* Wires everything onto d->loop and d->bus. NULL (with a line on stderr) on failure. */
agent_t *agent_new(daemon_t *d, const agent_opts_t *opts);
/* Before daemon_run() returns its loop's resources: call after daemon_run(). */
void agent_destroy(agent_t **self_p);

/* The address a node reports by default: the first non-loopback IPv4 of an interface that is up
 * and not Docker's, else 127.0.0.1. */
void agent_default_addr(char *buf, size_t len);
