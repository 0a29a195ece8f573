/* cluster — `shoal init` and `shoal cluster up|down|status`: this node's daemons as processes.
 *
 * `cluster up` starts, in dependency order, every daemon of the node that is not running yet:
 * store, orchestrator, scheduler, dispatcher, agent, dns. Each is the binary `shoal-<kind>` next
 * to the shoal executable, started in its own session with stdin on /dev/null and its output
 * appended to <state>/logs/<kind>.log; its pid goes to <state>/run/<kind>.pid. The next daemon is
 * started only once the previous one answers bus.Health with healthy=true, so a failure names the
 * daemon at fault and shows the end of its log.
 *
 * A pid file is trusted only while /proc/<pid>/cmdline is `shoal-<kind> ... --state-dir <state>`:
 * a recycled pid, a zombie or another cluster's daemon is never signalled. A daemon that runs
 * without a pid file (started by hand, or its pid file lost) is found by its socket answering
 * bus.Ping, which tells its pid.
 *
 * `cluster down` signals the daemons only; containers belong to the cluster, not to the
 * processes, and keep running (the agent re-attaches to them on its next start). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal.h"

static const char *const daemon_kinds[] = {"store",      "orchestrator", "scheduler",
                                           "dispatcher", "agent",        "dns"};
#define NKINDS (sizeof daemon_kinds / sizeof daemon_kinds[0])

static const char *const init_names[] = {"store", "orchestrator", "scheduler", "dispatcher",
                                         "agent", "dns",          "admin",     NULL};

#define HEALTH_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS   15000
#define LOG_TAIL_LINES    20

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void pidfile_path(const char *state_dir, const char *kind, char *buf, size_t len) {
    snprintf(buf, len, "%s/run/%s.pid", state_dir, kind);
}

static pid_t pidfile_read(const char *state_dir, const char *kind) {
    char path[PATH_MAX + 64];
    pidfile_path(state_dir, kind, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 1)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

static int pidfile_write(const char *state_dir, const char *kind, pid_t pid) {
    char path[PATH_MAX + 64], tmp[PATH_MAX + 80];
    pidfile_path(state_dir, kind, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "%d\n", (int)pid);
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        return -errno;
    return 0;
}

static void pidfile_remove(const char *state_dir, const char *kind) {
    char path[PATH_MAX + 64];
    pidfile_path(state_dir, kind, path, sizeof path);
    unlink(path);
}

/* True when `pid` is a live `shoal-<kind>` serving `state_dir`. */
static bool process_is_daemon(pid_t pid, const char *kind, const char *state_dir) {
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) /* zombies have an empty command line */
        return false;
    buf[n] = '\0';
    char want[64];
    snprintf(want, sizeof want, "shoal-%s", kind);
    const char *argv0 = buf, *slash = strrchr(argv0, '/');
    if (strcmp(slash ? slash + 1 : argv0, want) != 0)
        return false;
    /* Walk the NUL-separated arguments for --state-dir D / --state-dir=D. */
    for (const char *a = buf + strlen(buf) + 1; a < buf + n; a += strlen(a) + 1) {
        const char *dir = NULL;
        if (!strcmp(a, "--state-dir") && a + strlen(a) + 1 < buf + n)
            dir = a + strlen(a) + 1;
        else if (!strncmp(a, "--state-dir=", 12))
            dir = a + 12;
        if (dir) {
            char *abs = realpath(dir, NULL);
            bool same = !strcmp(abs ? abs : dir, state_dir);
            free(abs);
            return same;
        }
    }
    /* Started without --state-dir: it serves $SHOAL_STATE_DIR or the default; accept it only
     * when that is the directory we were asked about. */
    char *abs = realpath(config_state_dir(NULL), NULL);
    bool same = abs && !strcmp(abs, state_dir);
    free(abs);
    return same;
}

typedef struct daemon_ref {
    const char *kind;
    const char *state_dir;
    char endpoint[PATH_MAX + 32];
    char key[41];
    bool have_key;
} daemon_ref_t;

static void daemon_ref_init(cli_t *cli, daemon_ref_t *d, const char *kind) {
    memset(d, 0, sizeof *d);
    d->kind = kind;
    d->state_dir = cli->state_dir;
    config_rpc_endpoint(&cli->cfg, kind, d->endpoint, sizeof d->endpoint);
    d->have_key = bus_public_key(cli->state_dir, kind, d->key) == 0;
}

/* Calls a bus.* method of the daemon; 0 with *ret set, or an error. */
static int daemon_call(cli_t *cli, daemon_ref_t *d, const char *method,
                       const ProtobufCMessageDescriptor *output, int timeout_ms,
                       ProtobufCMessage **ret) {
    struct stat st;
    if (!d->have_key)
        return -ENOKEY;
    if (!strncmp(d->endpoint, "ipc://", 6) && stat(d->endpoint + 6, &st) < 0)
        return -ENOENT;
    if (!cli->identity) {
        cli->identity = bus_identity_load(cli->state_dir, "admin");
        if (!cli->identity)
            return -ENOKEY;
    }
    bus_client_t *client = bus_client_new(cli->identity, d->endpoint, d->key);
    if (!client)
        return -errno ? -errno : -ENOMEM;
    Shoal__Bus__Empty empty = SHOAL__BUS__EMPTY__INIT;
    int r = bus_client_call(client, method, &empty.base, output, timeout_ms, ret);
    bus_client_destroy(&client);
    return r == BUS_OK ? 0 : (r > 0 ? -EIO : r);
}

/* 1 healthy, 0 answering but unhealthy (status in buf), -errno no answer. */
static int daemon_health(cli_t *cli, daemon_ref_t *d, int timeout_ms, char *status,
                         size_t status_len) {
    ProtobufCMessage *out = NULL;
    int r = daemon_call(cli, d, "bus.Health", &shoal__bus__health_response__descriptor, timeout_ms,
                        &out);
    if (r < 0) {
        snprintf(status, status_len, "no answer");
        return r;
    }
    Shoal__Bus__HealthResponse *h = (Shoal__Bus__HealthResponse *)out;
    int healthy = h->healthy ? 1 : 0;
    snprintf(status, status_len, "%s", h->status && *h->status ? h->status : "");
    if (!healthy && !*status) {
        for (size_t i = 0; i < h->n_checks; i++)
            if (!h->checks[i]->ok) {
                snprintf(status, status_len, "%s: %s", h->checks[i]->name,
                         h->checks[i]->message ? h->checks[i]->message : "failing");
                break;
            }
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return healthy;
}

/* The pid of the running daemon of `kind`, or 0. Trusts the pid file when it names the daemon;
 * otherwise asks whoever answers on the daemon's socket (and repairs the pid file). */
static pid_t daemon_running_pid(cli_t *cli, daemon_ref_t *d) {
    pid_t pid = pidfile_read(d->state_dir, d->kind);
    if (pid > 0 && process_is_daemon(pid, d->kind, d->state_dir))
        return pid;
    ProtobufCMessage *out = NULL;
    if (daemon_call(cli, d, "bus.Ping", &shoal__bus__ping_response__descriptor, 500, &out) < 0)
        return 0;
    pid = ((Shoal__Bus__PingResponse *)out)->pid;
    protobuf_c_message_free_unpacked(out, NULL);
    if (pid <= 1 || !process_is_daemon(pid, d->kind, d->state_dir))
        return 0;
    pidfile_write(d->state_dir, d->kind, pid);
    return pid;
}

/* Prints the last lines of a log to stderr, indented. */
static void log_tail(const char *path, int lines) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "  (no log at %s)\n", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long start = size > 16384 ? size - 16384 : 0;
    fseek(f, start, SEEK_SET);
    char *buf = calloc(1, (size_t)(size - start) + 1);
    if (!buf) {
        fclose(f);
        return;
    }
    size_t n = fread(buf, 1, (size_t)(size - start), f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    const char *p = buf + n;
    int seen = 0;
    while (p > buf) {
        if (p[-1] == '\n' && ++seen == lines)
            break;
        p--;
    }
    if (!*p)
        fprintf(stderr, "  (log %s is empty)\n", path);
    for (const char *line = p; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        fprintf(stderr, "  | %.*s\n", (int)len, line);
        line += len + (nl ? 1 : 0);
    }
    free(buf);
}

/* Forks and execs `shoal-<kind> --state-dir D [extra...]`, detached, logging to its file. */
static pid_t daemon_spawn(const char *bin, const char *state_dir, const char *log_path,
                          const char *const *extra) {
    const char *argv[16];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "--state-dir";
    argv[n++] = state_dir;
    for (; extra && *extra && n < 15; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;

    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(logfd);
        return -e;
    }
    if (pid == 0) {
        setsid();
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        /* Nothing of ours (ZeroMQ sockets, key files) leaks into the daemon. */
        close_range(3, ~0U, 0);
        signal(SIGPIPE, SIG_DFL);
        execv(bin, (char *const *)argv);
        dprintf(STDERR_FILENO, "shoal: cannot execute %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(logfd);
    return pid;
}

static int cmd_init_run(cli_t *cli, bool quiet) {
    const char *dir = config_state_dir(cli->state_dir_flag);
    int r = config_init(dir, init_names);
    if (r < 0)
        return cli_fail(cli, "init: cannot initialise %s: %s", dir, strerror(-r));
    if (cli_load_config(cli) < 0)
        return 1;
    if (!quiet) {
        printf("state dir:  %s\n", cli->state_dir);
        printf("cluster id: %s\n", cli->cfg.cluster_id);
    }
    return 0;
}

int cmd_init(cli_t *cli, int argc, char **argv) {
    static const cmd_spec_t spec = {
        .path = "init",
        .args = "[OPTIONS]",
        .summary = "Create a cluster: its state dir, configuration and keys (idempotent).",
        .max_args = 0,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    return cmd_init_run(cli, false);
}

int cmd_cluster_up(cli_t *cli, int argc, char **argv) {
    const char *dns_listen = "127.0.0.1:8053";
    const cli_flag_t flags[] = {
        {"dns-listen", 0, FLAG_STRING, &dns_listen, NULL, NULL, "ADDR:PORT",
         "Address shoal-dns answers on (default 127.0.0.1:8053)"},
        {0},
    };
    const cmd_spec_t spec = {
        .path = "cluster up",
        .args = "[OPTIONS]",
        .summary = "Start every daemon of this node that is not running (initialises the cluster "
                   "first when needed)\nand wait until each answers healthy. Containers are "
                   "never touched.",
        .flags = flags,
        .max_args = 0,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    const char *colon = strrchr(dns_listen, ':');
    uint64_t port;
    if (!colon || colon == dns_listen || parse_uint(colon + 1, &port) < 0 || port == 0 ||
        port > 65535)
        return cli_fail_cmd(cli, "--dns-listen: must be ADDR:PORT like 127.0.0.1:8053 (got \"%s\")",
                            dns_listen);

    /* init is idempotent: it creates the cluster the first time and any missing key later. */
    if (cmd_init_run(cli, true) != 0)
        return 1;
    cli->command = "cluster up";

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return cli_fail_cmd(cli, "cannot find the shoal executable: %s", strerror(errno));
    self[n] = '\0';
    const char *bindir = dirname(self);

    for (size_t i = 0; i < NKINDS; i++) {
        const char *kind = daemon_kinds[i];
        daemon_ref_t d;
        daemon_ref_init(cli, &d, kind);
        char status[256] = "";
        pid_t pid = daemon_running_pid(cli, &d);
        bool started = false;
        char log_path[PATH_MAX + 64];
        snprintf(log_path, sizeof log_path, "%s/logs/%s.log", cli->state_dir, kind);
        if (pid == 0) {
            char bin[PATH_MAX + 32];
            snprintf(bin, sizeof bin, "%s/shoal-%s", bindir, kind);
            if (access(bin, X_OK) < 0)
                return cli_fail_cmd(cli, "cannot start %s: %s not found (build it: make all)", kind,
                                    bin);
            const char *extra[] = {"--listen", dns_listen, NULL};
            pid = daemon_spawn(bin, cli->state_dir, log_path, !strcmp(kind, "dns") ? extra : NULL);
            if (pid < 0)
                return cli_fail_cmd(cli, "cannot start %s: %s", bin, strerror(-pid));
            pidfile_write(cli->state_dir, kind, pid);
            started = true;
        }
        int64_t deadline = clock_mono_ms() + HEALTH_TIMEOUT_MS;
        int healthy = 0;
        for (;;) {
            if (started) {
                int wstatus;
                if (waitpid(pid, &wstatus, WNOHANG) == pid) {
                    pidfile_remove(cli->state_dir, kind);
                    if (WIFEXITED(wstatus))
                        cli_fail_cmd(cli,
                                     "shoal-%s exited with status %d while starting; last "
                                     "lines of %s:",
                                     kind, WEXITSTATUS(wstatus), log_path);
                    else
                        cli_fail_cmd(cli,
                                     "shoal-%s was killed by signal %d while starting; "
                                     "last lines of %s:",
                                     kind, WTERMSIG(wstatus), log_path);
                    log_tail(log_path, LOG_TAIL_LINES);
                    return 1;
                }
            } else if (!process_is_daemon(pid, kind, cli->state_dir)) {
                pidfile_remove(cli->state_dir, kind);
                cli_fail_cmd(cli, "shoal-%s (pid %d) stopped; last lines of %s:", kind, (int)pid,
                             log_path);
                log_tail(log_path, LOG_TAIL_LINES);
                return 1;
            }
            healthy = daemon_health(cli, &d, 1000, status, sizeof status);
            if (healthy == 1 || clock_mono_ms() >= deadline)
                break;
            sleep_ms(100);
        }
        if (healthy != 1) {
            cli_fail_cmd(cli,
                         "shoal-%s (pid %d) did not become healthy within %d s (%s); last "
                         "lines of %s:",
                         kind, (int)pid, HEALTH_TIMEOUT_MS / 1000, *status ? status : "no answer",
                         log_path);
            log_tail(log_path, LOG_TAIL_LINES);
            return 1;
        }
        printf("%-12s running (pid %d)\n", kind, (int)pid);
        fflush(stdout);
    }
    return 0;
}

int cmd_cluster_down(cli_t *cli, int argc, char **argv) {
    static const cmd_spec_t spec = {
        .path = "cluster down",
        .args = "[OPTIONS]",
        .summary = "Stop every daemon of this node (SIGTERM, then SIGKILL after 15 s). Containers "
                   "keep running.",
        .max_args = 0,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_load_config(cli) < 0)
        return 1;
    pid_t pids[NKINDS] = {0};
    /* Reverse start order: the agent and dns go first, the store last. */
    for (size_t k = NKINDS; k-- > 0;) {
        daemon_ref_t d;
        daemon_ref_init(cli, &d, daemon_kinds[k]);
        pids[k] = daemon_running_pid(cli, &d);
        if (pids[k] > 0 && kill(pids[k], SIGTERM) < 0 && errno == ESRCH)
            pids[k] = 0;
    }
    int64_t deadline = clock_mono_ms() + STOP_TIMEOUT_MS;
    bool killed[NKINDS] = {false};
    for (;;) {
        bool any = false;
        for (size_t k = 0; k < NKINDS; k++)
            if (pids[k] > 0 && process_is_daemon(pids[k], daemon_kinds[k], cli->state_dir))
                any = true;
        if (!any)
            break;
        if (clock_mono_ms() >= deadline) {
            for (size_t k = 0; k < NKINDS; k++)
                if (pids[k] > 0 && !killed[k] &&
                    process_is_daemon(pids[k], daemon_kinds[k], cli->state_dir)) {
                    kill(pids[k], SIGKILL);
                    killed[k] = true;
                }
            deadline = clock_mono_ms() + 5000;
        }
        sleep_ms(50);
    }
    for (size_t k = NKINDS; k-- > 0;) {
        pidfile_remove(cli->state_dir, daemon_kinds[k]);
        if (pids[k] == 0)
            printf("%-12s not running\n", daemon_kinds[k]);
        else if (killed[k])
            printf("%-12s killed (pid %d; no exit %d s after SIGTERM)\n", daemon_kinds[k],
                   (int)pids[k], STOP_TIMEOUT_MS / 1000);
        else
            printf("%-12s stopped (pid %d)\n", daemon_kinds[k], (int)pids[k]);
    }
    return 0;
}

int cmd_cluster_status(cli_t *cli, int argc, char **argv) {
    static const cmd_spec_t spec = {
        .path = "cluster status",
        .args = "[OPTIONS]",
        .summary = "Show each daemon of this node: running or stopped, pid, health.\nExits 0 when "
                   "every daemon is running and healthy, 1 otherwise.",
        .max_args = 0,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_load_config(cli) < 0)
        return 1;
    static const char *const headers[] = {"DAEMON", "STATUS", "PID", "HEALTH"};
    table_t *t = table_new(headers, 4);
    bool all_healthy = true;
    for (size_t k = 0; k < NKINDS; k++) {
        daemon_ref_t d;
        daemon_ref_init(cli, &d, daemon_kinds[k]);
        pid_t pid = daemon_running_pid(cli, &d);
        char pidbuf[16] = "-", health[300] = "-", status[256] = "";
        if (pid > 0) {
            snprintf(pidbuf, sizeof pidbuf, "%d", (int)pid);
            int h = daemon_health(cli, &d, 1000, status, sizeof status);
            if (h == 1)
                snprintf(health, sizeof health, "healthy");
            else if (h == 0)
                snprintf(health, sizeof health, "unhealthy%s%s%s", *status ? " (" : "", status,
                         *status ? ")" : "");
            else
                snprintf(health, sizeof health, "no answer");
            if (h != 1)
                all_healthy = false;
        } else {
            all_healthy = false;
        }
        const char *row[] = {daemon_kinds[k], pid > 0 ? "running" : "stopped", pidbuf, health};
        table_add(t, row);
    }
    table_print(t, stdout);
    table_destroy(&t);
    return all_healthy ? 0 : 1;
}
