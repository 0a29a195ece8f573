/* shoal-agent — runs a node's tasks (DESIGN §1, §5): registers with the dispatcher, heartbeats,
 * follows its assignment set and drives each task's container through the Docker executor.
 * Flags: --dispatcher ENDPOINT, --docker-socket PATH, --concurrency N, --addr ADDR. Everything
 * else lives in agent.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "daemon.h"

enum { OPT_DISPATCHER = 256, OPT_DOCKER_SOCKET, OPT_CONCURRENCY, OPT_ADDR };

static const struct option agent_flags[] = {
    {"dispatcher", required_argument, NULL, OPT_DISPATCHER},
    {"docker-socket", required_argument, NULL, OPT_DOCKER_SOCKET},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"addr", required_argument, NULL, OPT_ADDR},
    {0},
};

static int copy_flag(char *dst, size_t cap, const char *flag, const char *arg) {
    if (!arg || !*arg || strlen(arg) >= cap) {
        fprintf(stderr, "shoal-agent: --%s: expected a value shorter than %zu characters\n", flag,
                cap);
        return -EINVAL;
    }
    memcpy(dst, arg, strlen(arg) + 1);
    return 0;
}

static int on_option(void *ctx, int opt, const char *arg) {
    agent_opts_t *o = ctx;
    switch (opt) {
    case OPT_DISPATCHER:
        return copy_flag(o->dispatcher_endpoint, sizeof o->dispatcher_endpoint, "dispatcher", arg);
    case OPT_DOCKER_SOCKET:
        return copy_flag(o->docker_socket, sizeof o->docker_socket, "docker-socket", arg);
    case OPT_ADDR:
        return copy_flag(o->addr, sizeof o->addr, "addr", arg);
    case OPT_CONCURRENCY: {
        char *end = NULL;
        long n = strtol(arg, &end, 10);
        if (!end || *end || n < 1 || n > 256) {
            fprintf(stderr, "shoal-agent: --concurrency: must be 1..256 (got \"%s\")\n", arg);
            return -EINVAL;
        }
        o->concurrency = (int)n;
        return 0;
    }
    }
    return -EINVAL;
}

int main(int argc, char **argv) {
    agent_opts_t opts = {.concurrency = 8};
    daemon_opts_t dopts = {
        .extra = agent_flags,
        .on_option = on_option,
        .ctx = &opts,
        .usage = "  --dispatcher ENDPOINT   dispatcher bus endpoint (default ipc://<state>/run/"
                 "dispatcher.rpc)\n"
                 "  --docker-socket PATH    Docker Engine socket (default /var/run/docker.sock)\n"
                 "  --concurrency N         Engine calls run at once (default 8)\n"
                 "  --addr ADDR             address reported for this node (default: first "
                 "non-loopback IPv4)",
        .no_store = true, /* agents are workers: they talk to the dispatcher only */
    };
    daemon_t d;
    if (daemon_setup(&d, "agent", argc, argv, &dopts) < 0)
        return 1;
    agent_t *agent = agent_new(&d, &opts);
    if (!agent)
        return 1;
    int rc = daemon_run(&d);
    agent_destroy(&agent);
    return rc;
}
