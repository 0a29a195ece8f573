/* shoal-agent — runs a node's tasks (DESIGN §1, §5): registers with the dispatcher, heartbeats,
 * follows its assignment set and drives each task's container through the Docker executor
 * (agent.c); with --sim-nodes N, N simulated nodes with in-memory containers instead (sim.c).
 * With --sim-kill / --sim-revive NAME it is a client: it asks the running sim agent of this
 * state dir and instance to stop / start one simulated node, and exits.
 *
 * Endpoints: lib/daemon binds every daemon at ipc://<state>/run/<kind>.rpc|.pub, and binding
 * unlinks a live socket file, so a second agent on the same state dir would take the first one's
 * endpoint. An agent given --rpc/--pub, or a sim agent, therefore binds its own
 * (default ipc://<state>/run/agent-<instance>.rpc|.pub) through agent_setup(), which does what
 * daemon_setup() does with other endpoints; daemon_run() runs it as any daemon. Such an agent is
 * another node, so a Docker one keeps its id in <state>/agent/node_id.<instance>. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "agent.pb-c.h"
#include "daemon.h"
#include "sim.h"

enum {
    OPT_DISPATCHER = 256,
    OPT_DOCKER_SOCKET,
    OPT_CONCURRENCY,
    OPT_ADDR,
    OPT_RPC,
    OPT_PUB,
    OPT_SIM_NODES,
    OPT_SIM_PREFIX,
    OPT_SIM_START_LATENCY,
    OPT_SIM_FAILURE_RATE,
    OPT_SIM_CPUS,
    OPT_SIM_MEMORY,
    OPT_SIM_LABELS,
    OPT_SIM_LABEL_SPREAD,
    OPT_SIM_SEED,
    OPT_SIM_KILL,
    OPT_SIM_REVIVE,
    /* lib/daemon's own flags, only seen by the pre-scan */
    OPT_STATE_DIR,
    OPT_INSTANCE,
    OPT_LOG_LEVEL,
    OPT_HELP,
};

static const struct option agent_flags[] = {
    {"dispatcher", required_argument, NULL, OPT_DISPATCHER},
    {"docker-socket", required_argument, NULL, OPT_DOCKER_SOCKET},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"addr", required_argument, NULL, OPT_ADDR},
    {"rpc", required_argument, NULL, OPT_RPC},
    {"pub", required_argument, NULL, OPT_PUB},
    {"sim-nodes", required_argument, NULL, OPT_SIM_NODES},
    {"sim-prefix", required_argument, NULL, OPT_SIM_PREFIX},
    {"sim-start-latency", required_argument, NULL, OPT_SIM_START_LATENCY},
    {"sim-failure-rate", required_argument, NULL, OPT_SIM_FAILURE_RATE},
    {"sim-cpus", required_argument, NULL, OPT_SIM_CPUS},
    {"sim-memory", required_argument, NULL, OPT_SIM_MEMORY},
    {"sim-labels", required_argument, NULL, OPT_SIM_LABELS},
    {"sim-label-spread", required_argument, NULL, OPT_SIM_LABEL_SPREAD},
    {"sim-seed", required_argument, NULL, OPT_SIM_SEED},
    {"sim-kill", required_argument, NULL, OPT_SIM_KILL},
    {"sim-revive", required_argument, NULL, OPT_SIM_REVIVE},
    {0},
};

static const char usage_text[] =
    "  --dispatcher ENDPOINT   dispatcher bus endpoint (default ipc://<state>/run/"
    "dispatcher.rpc)\n"
    "  --docker-socket PATH    Docker Engine socket (default /var/run/docker.sock)\n"
    "  --concurrency N         Engine calls run at once (default 8)\n"
    "  --addr ADDR             address reported for this node (default: first non-loopback "
    "IPv4)\n"
    "  --rpc EP, --pub EP      bind these bus endpoints (default for a second agent: "
    "ipc://<state>/run/agent-<instance>.rpc|.pub)\n"
    "simulated nodes (scale tests; the agent binds agent-<instance> endpoints):\n"
    "  --sim-nodes N           run N simulated nodes in this process instead of Docker tasks\n"
    "  --sim-prefix NAME       node names NAME-1..NAME-N (default sim)\n"
    "  --sim-start-latency MS  a task reaches RUNNING MS after it is started (default 0)\n"
    "  --sim-failure-rate P    a start fails with probability P (default 0)\n"
    "  --sim-cpus C            CPUs each node reports (default 4)\n"
    "  --sim-memory M          memory each node reports, e.g. 8g (default 8g)\n"
    "  --sim-labels K=V,...    engine labels of every node\n"
    "  --sim-label-spread K=v1|v2|...   label K takes v1, v2, ... on successive nodes "
    "(repeatable)\n"
    "  --sim-seed N            seed of the failure draws (default: the clock)\n"
    "  --sim-kill NAME[,NAME]  tell the running sim agent to stop these nodes (no heartbeats), "
    "then exit\n"
    "  --sim-revive NAME[,NAME]  tell it to start them again, then exit";

typedef struct main_opts {
    agent_opts_t agent;
    sim_opts_t sim;
    char rpc[PATH_MAX + 32];
    char pub[PATH_MAX + 32];
    char kill[1024]; /* NAME[,NAME...] */
    char revive[1024];
    /* common flags, as the pre-scan saw them */
    const char *state_dir;
    char instance[64];
    enum log_level level;
    bool help, bad;
} main_opts_t;

static bool quiet; /* the pre-scan: daemon_setup() reports the same mistakes again */

static int copy_flag(char *dst, size_t cap, const char *flag, const char *arg) {
    if (!arg || !*arg || strlen(arg) >= cap) {
        if (!quiet)
            fprintf(stderr, "shoal-agent: --%s: expected a value shorter than %zu characters\n",
                    flag, cap);
        return -EINVAL;
    }
    memcpy(dst, arg, strlen(arg) + 1);
    return 0;
}

static int int_flag(const char *flag, const char *arg, long min, long max, int *ret) {
    char *end = NULL;
    errno = 0;
    long n = strtol(arg, &end, 10);
    if (errno || !end || end == arg || *end || n < min || n > max) {
        if (!quiet)
            fprintf(stderr, "shoal-agent: --%s: must be %ld..%ld (got \"%s\")\n", flag, min, max,
                    arg);
        return -EINVAL;
    }
    *ret = (int)n;
    return 0;
}

static int bad_value(const char *flag, const char *what, const char *arg) {
    if (!quiet)
        fprintf(stderr, "shoal-agent: --%s: %s (got \"%s\")\n", flag, what, arg);
    return -EINVAL;
}

static int on_option(void *ctx, int opt, const char *arg) {
    main_opts_t *m = ctx;
    agent_opts_t *o = &m->agent;
    char err[256];
    switch (opt) {
    case OPT_DISPATCHER:
        return copy_flag(o->dispatcher_endpoint, sizeof o->dispatcher_endpoint, "dispatcher", arg);
    case OPT_DOCKER_SOCKET:
        return copy_flag(o->docker_socket, sizeof o->docker_socket, "docker-socket", arg);
    case OPT_ADDR:
        return copy_flag(o->addr, sizeof o->addr, "addr", arg);
    case OPT_CONCURRENCY:
        return int_flag("concurrency", arg, 1, 256, &o->concurrency);
    case OPT_RPC:
        return copy_flag(m->rpc, sizeof m->rpc, "rpc", arg);
    case OPT_PUB:
        return copy_flag(m->pub, sizeof m->pub, "pub", arg);
    case OPT_SIM_NODES:
        return int_flag("sim-nodes", arg, 1, SIM_NODES_MAX, &m->sim.nodes);
    case OPT_SIM_PREFIX:
        for (const char *p = arg; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                return bad_value("sim-prefix", "use lowercase letters, digits and '-'", arg);
        return copy_flag(m->sim.prefix, sizeof m->sim.prefix, "sim-prefix", arg);
    case OPT_SIM_START_LATENCY:
        return int_flag("sim-start-latency", arg, 0, 3600000, &m->sim.start_latency_ms);
    case OPT_SIM_FAILURE_RATE:
        return sim_parse_rate(arg, &m->sim.failure_rate) < 0
                   ? bad_value("sim-failure-rate", "a probability in [0, 1]", arg)
                   : 0;
    case OPT_SIM_CPUS:
        return sim_parse_cpus(arg, &m->sim.nano_cpus) < 0
                   ? bad_value("sim-cpus", "a positive number of CPUs", arg)
                   : 0;
    case OPT_SIM_MEMORY:
        return sim_parse_size(arg, &m->sim.memory_bytes) < 0
                   ? bad_value("sim-memory", "bytes, with an optional k|m|g|t suffix", arg)
                   : 0;
    case OPT_SIM_LABELS:
        if (sim_parse_labels(&m->sim, arg, err, sizeof err) < 0) {
            if (!quiet)
                fprintf(stderr, "shoal-agent: --sim-labels: %s\n", err);
            return -EINVAL;
        }
        return 0;
    case OPT_SIM_LABEL_SPREAD:
        if (sim_parse_spread(&m->sim, arg, err, sizeof err) < 0) {
            if (!quiet)
                fprintf(stderr, "shoal-agent: --sim-label-spread: %s\n", err);
            return -EINVAL;
        }
        return 0;
    case OPT_SIM_SEED: {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 10);
        if (errno || end == arg || *end)
            return bad_value("sim-seed", "a number", arg);
        m->sim.seed = v;
        return 0;
    }
    case OPT_SIM_KILL:
        return copy_flag(m->kill, sizeof m->kill, "sim-kill", arg);
    case OPT_SIM_REVIVE:
        return copy_flag(m->revive, sizeof m->revive, "sim-revive", arg);
    }
    return -EINVAL;
}

/* Reads every flag once, quietly, to decide how to set up; daemon_setup() reads them again
 * (and reports mistakes) on the usual path. */
static void prescan(main_opts_t *m, int argc, char **argv) {
    static const struct option common[] = {
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"instance", required_argument, NULL, OPT_INSTANCE},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, OPT_HELP},
    };
    size_t ncommon = sizeof common / sizeof common[0];
    size_t nextra = sizeof agent_flags / sizeof agent_flags[0] - 1;
    struct option
        all[sizeof common / sizeof common[0] + sizeof agent_flags / sizeof agent_flags[0]];
    memcpy(all, common, sizeof common);
    memcpy(all + ncommon, agent_flags, (nextra + 1) * sizeof *all);
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(m->instance, sizeof m->instance, "%s", host[0] ? host : "agent");
    m->level = LOG_LEVEL_INFO;
    quiet = true;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", all, NULL)) != -1) {
        switch (c) {
        case OPT_STATE_DIR:
            m->state_dir = optarg;
            break;
        case OPT_INSTANCE:
            snprintf(m->instance, sizeof m->instance, "%s", optarg);
            break;
        case OPT_LOG_LEVEL: {
            static const char *const names[] = {"err", "warn", "info", "debug"};
            bool ok = false;
            for (int i = 0; i < 4; i++)
                if (!strcmp(optarg, names[i])) {
                    m->level = (enum log_level)i;
                    ok = true;
                }
            m->bad |= !ok;
            break;
        }
        case OPT_HELP:
            m->help = true;
            break;
        default:
            if (c >= OPT_DISPATCHER && c < OPT_STATE_DIR) {
                if (on_option(m, c, optarg) < 0)
                    m->bad = true;
            } else {
                m->bad = true;
            }
        }
    }
    opterr = 1;
    optind = 1;
    quiet = false;
}

static bool name_ok(const char *s) {
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static void own_endpoints(const main_opts_t *m, const shoal_config_t *cfg, char *rpc, char *pub,
                          size_t len) {
    char path[PATH_MAX + 32];
    if (m->rpc[0]) {
        snprintf(rpc, len, "%s", m->rpc);
    } else {
        config_path(cfg, path, sizeof path, "run/agent-%s.rpc", m->instance);
        snprintf(rpc, len, "ipc://%s", path);
    }
    if (m->pub[0]) {
        snprintf(pub, len, "%s", m->pub);
    } else {
        config_path(cfg, path, sizeof path, "run/agent-%s.pub", m->instance);
        snprintf(pub, len, "ipc://%s", path);
    }
}

/* daemon_setup() with the agent's own endpoints (see the top of this file). */
static int agent_setup(daemon_t *d, const main_opts_t *m) {
    memset(d, 0, sizeof *d);
    d->kind = "agent";
    snprintf(d->instance, sizeof d->instance, "%s", m->instance);
    if (!name_ok(m->instance)) {
        fprintf(stderr,
                "shoal-agent: --instance: use letters, digits, '-', '_' and '.' (got "
                "\"%s\")\n",
                m->instance);
        return -EINVAL;
    }
    log_init("agent", m->level);
    signal(SIGPIPE, SIG_IGN);
    zsys_init();
    zsys_set_logstream(NULL);
    const char *state_dir = config_state_dir(m->state_dir);
    int r = config_load(state_dir, &d->cfg);
    if (r < 0) {
        fprintf(stderr,
                "shoal-agent: cannot load %s/cluster.conf: %s (run: shoal init --state-dir %s)\n",
                state_dir, strerror(-r), state_dir);
        return r;
    }
    d->identity = bus_identity_load(state_dir, "agent");
    if (!d->identity) {
        fprintf(stderr, "shoal-agent: no key %s/keys/private/agent.key_secret (run: shoal init)\n",
                state_dir);
        return -ENOKEY;
    }
    char rpc[PATH_MAX + 32], pub[PATH_MAX + 32];
    own_endpoints(m, &d->cfg, rpc, pub, sizeof rpc);
    d->bus = bus_server_new(&d->cfg, "agent", d->instance, rpc, pub);
    if (!d->bus) {
        fprintf(stderr, "shoal-agent: cannot bind the bus at %s: %s\n", rpc, strerror(errno));
        return -errno;
    }
    d->loop = zloop_new();
    if (!d->loop)
        return -ENOMEM;
    bus_server_attach(d->bus, d->loop);
    bus_server_publish_logs(d->bus);
    d->started_ms = clock_mono_ms();
    return 0;
}

/* --sim-kill / --sim-revive NAME[,NAME...]: one call per name to the sim agent, as admin, on
 * one connection (so that several nodes stop at nearly the same moment). */
static int sim_client(const main_opts_t *m) {
    bool kill = m->kill[0] != '\0';
    char names[1024];
    snprintf(names, sizeof names, "%s", kill ? m->kill : m->revive);
    log_init("agent", LOG_LEVEL_WARN);
    zsys_init();
    zsys_set_logstream(NULL);
    shoal_config_t cfg;
    const char *state_dir = config_state_dir(m->state_dir);
    int r = config_load(state_dir, &cfg);
    if (r < 0) {
        fprintf(stderr, "shoal-agent: cannot load %s/cluster.conf: %s\n", state_dir, strerror(-r));
        return 1;
    }
    zcert_t *admin = bus_identity_load(state_dir, "admin");
    char key[41];
    if (!admin || bus_public_key(state_dir, "agent", key) < 0) {
        fprintf(stderr,
                "shoal-agent: --sim-%s needs keys/private/admin.key_secret and "
                "keys/public/agent.key in %s\n",
                kill ? "kill" : "revive", state_dir);
        zcert_destroy(&admin);
        return 1;
    }
    char rpc[PATH_MAX + 32], pub[PATH_MAX + 32];
    own_endpoints(m, &cfg, rpc, pub, sizeof rpc);
    bus_client_t *client = bus_client_new(admin, rpc, key);
    int status = client ? 0 : 1;
    char *save = NULL;
    for (char *name = strtok_r(names, ",", &save); client && name;
         name = strtok_r(NULL, ",", &save)) {
        Shoal__Agent__SimNodeRequest in = SHOAL__AGENT__SIM_NODE_REQUEST__INIT;
        in.name = name;
        Shoal__Agent__SimNodeResponse *out = NULL;
        int rc = bus_client_call(client, kill ? "agent.SimNodeStop" : "agent.SimNodeStart",
                                 &in.base, &shoal__agent__sim_node_response__descriptor, 3000,
                                 (ProtobufCMessage **)&out);
        if (rc == BUS_OK && out->node) {
            printf("%s %s node=%s tasks=%u\n", kill ? "stopped" : "started", out->node->name,
                   out->node->node_id, out->node->tasks);
        } else {
            fprintf(stderr, "shoal-agent: --sim-%s %s: %s (sim agent at %s)\n",
                    kill ? "kill" : "revive", name,
                    rc > 0 ? bus_client_error(client) : strerror(rc < 0 ? -rc : EPROTO), rpc);
            status = 1;
        }
        if (out)
            protobuf_c_message_free_unpacked(&out->base, NULL);
    }
    if (!client)
        fprintf(stderr, "shoal-agent: cannot connect to the sim agent at %s\n", rpc);
    bus_client_destroy(&client);
    zcert_destroy(&admin);
    return status;
}

int main(int argc, char **argv) {
    main_opts_t m;
    memset(&m, 0, sizeof m);
    m.agent.concurrency = 8;
    sim_opts_init(&m.sim);
    prescan(&m, argc, argv);
    if (!m.help && !m.bad && (m.kill[0] || m.revive[0]))
        return sim_client(&m);

    /* On the usual path daemon_setup() parses again; the sim values are re-read from scratch. */
    bool own = !m.help && !m.bad && (m.sim.nodes > 0 || m.rpc[0] || m.pub[0]);
    daemon_opts_t dopts = {
        .extra = agent_flags,
        .on_option = on_option,
        .ctx = &m,
        .usage = usage_text,
        .no_store = true, /* agents are workers: they talk to the dispatcher only */
    };
    daemon_t d;
    if (own) {
        if (agent_setup(&d, &m) < 0)
            return 1;
    } else {
        sim_opts_init(&m.sim);
        m.sim.nodes = 0;
        if (daemon_setup(&d, "agent", argc, argv, &dopts) < 0)
            return 1;
    }
    if (!m.agent.addr[0])
        agent_default_addr(m.agent.addr, sizeof m.agent.addr);
    if (!m.agent.dispatcher_endpoint[0])
        config_rpc_endpoint(&d.cfg, "dispatcher", m.agent.dispatcher_endpoint,
                            sizeof m.agent.dispatcher_endpoint);

    agent_t *agent = NULL;
    sim_t *sim = NULL;
    if (m.sim.nodes > 0) {
        sim = sim_new(&d, &m.sim, m.agent.dispatcher_endpoint, m.agent.addr);
        if (!sim)
            return 1;
    } else {
        if (own)
            snprintf(m.agent.node_id_file, sizeof m.agent.node_id_file, "agent/node_id.%s",
                     d.instance);
        agent = agent_new(&d, &m.agent);
        if (!agent)
            return 1;
    }
    int rc = daemon_run(&d);
    agent_destroy(&agent);
    sim_destroy(&sim);
    return rc;
}
