/* sim_script — data-driven trace tests (the .txt files of tests/sim/testdata), in the style of
 * etcd/raft's interaction tests: each file is a sequence of commands, each followed by `----` and
 * the output it must produce (the core's own trace lines, the deliveries, and results), ended by a
 * blank line. Reviewers read the protocol instead of test code; `--rewrite` regenerates the
 * expectations after an intended change, and the diff shows what changed in the protocol.
 *
 * The world is the simulator's (sim_cluster.c) in scripted mode: no ticks unless asked, no
 * clients or faults, a FIFO network without loss, an instant disk — and the safety checker of
 * sim_check.c still runs after every step. Commands:
 *
 *   add-nodes N [pre-vote=0|1] [check-quorum=0|1] [batch=K] [inflight=K] [snapshot=T]
 *             [trailing=K]           a new cluster of N founders (ids 1..N)
 *   tick ID [N]                      N ticks of member ID (default 1)
 *   campaign ID                      tick ID until it starts an election (or a new one)
 *   heartbeat ID                     tick leader ID until it sends heartbeats
 *   stabilize                        deliver messages and disk writes until none are left
 *   deliver N                        only until N more messages are delivered (FIFO)
 *   drop                             lose every message in flight
 *   propose ID DATA                  a client write
 *   read ID CTX                      a ReadIndex read
 *   transfer ID TARGET               leadership transfer (TARGET 0: the most up-to-date)
 *   add-learner|promote|remove ID NODE   membership change on leader ID (add-learner also
 *                                    starts the new, empty member NODE)
 *   isolate ID | cut A B | heal      partitions
 *   crash ID | restart ID            lose the member's volatile state / start it from disk
 *   status [ID...]                   one line per member
 *   log ID                           the member's log
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define MAX_ARGS 16

static const char *err_name(int rc) {
    switch (-rc) {
    case 0:
        return "ok";
    case EINVAL:
        return "EINVAL";
    case EREMOTE:
        return "EREMOTE (not the leader)";
    case EBUSY:
        return "EBUSY";
    case EAGAIN:
        return "EAGAIN";
    case ENOENT:
        return "ENOENT";
    case EEXIST:
        return "EEXIST";
    case ENOSPC:
        return "ENOSPC";
    case EALREADY:
        return "EALREADY";
    }
    return "error";
}

static sim_node_t *node_arg(sim_t *s, const char *arg) {
    int id = atoi(arg);
    if (id < 1 || id >= SIM_MAX_NODES || !s->nodes[id].exists)
        return NULL;
    return &s->nodes[id];
}

static void print_ids(FILE *out, const raft_id_t *ids, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        fprintf(out, "%s%llu", i ? "," : "", (unsigned long long)ids[i]);
}

static void status_line(sim_t *s, sim_node_t *n, FILE *out) {
    if (!n->up) {
        fprintf(out, "n%llu down\n", (unsigned long long)n->id);
        return;
    }
    raft_status_t st;
    raft_status(n->r, &st);
    fprintf(out, "n%llu %s term=%llu vote=%llu leader=%llu commit=%llu applied=%llu log=%llu..%llu",
            (unsigned long long)n->id, raft_role_name(st.role), (unsigned long long)st.term,
            (unsigned long long)st.vote, (unsigned long long)st.leader,
            (unsigned long long)st.commit, (unsigned long long)st.applied,
            (unsigned long long)st.first_index, (unsigned long long)st.last_index);
    if (st.snapshot.index)
        fprintf(out, " snapshot=%llu/%llu", (unsigned long long)st.snapshot.index,
                (unsigned long long)st.snapshot.term);
    fprintf(out, " voters=");
    print_ids(out, st.conf.voters, st.conf.n_voters);
    if (st.conf.n_learners) {
        fprintf(out, " learners=");
        print_ids(out, st.conf.learners, st.conf.n_learners);
    }
    fputc('\n', out);
}

static void log_lines(sim_node_t *n, FILE *out) {
    const sim_log_t *l = &n->view;
    fprintf(out, "n%llu log after %llu/%llu:\n", (unsigned long long)n->id,
            (unsigned long long)l->offset, (unsigned long long)l->offset_term);
    for (size_t i = 0; i < l->n; i++) {
        const sim_entry_t *e = &l->e[i];
        fprintf(out, "  %llu/%llu %s", (unsigned long long)e->index, (unsigned long long)e->term,
                e->type == RAFT_ENTRY_CONF ? "conf"
                : e->len                   ? ""
                                           : "no-op");
        if (e->type == RAFT_ENTRY_CONF) {
            raft_conf_t c;
            if (raft_conf_change_decode(e->data, e->len, NULL, NULL, &c) == 0) {
                fprintf(out, " voters=");
                print_ids(out, c.voters, c.n_voters);
                if (c.n_learners) {
                    fprintf(out, " learners=");
                    print_ids(out, c.learners, c.n_learners);
                }
            }
        } else {
            fprintf(out, "%.*s", (int)e->len, (const char *)e->data);
        }
        fputc('\n', out);
    }
}

static int opt(int argc, char **argv, const char *key, int def) {
    size_t k = strlen(key);
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], key, k) && argv[i][k] == '=')
            return atoi(argv[i] + k + 1);
    return def;
}

static int step_event(sim_t *s, sim_node_t *n, raft_event_t *ev) {
    ev->time = s->now;
    return sim_node_step(s, n, ev);
}

/* Runs one command; its output (traces and results) goes to out. */
static void run_command(sim_t *s, bool *ready, int argc, char **argv, FILE *out) {
    const char *cmd = argv[0];
    if (!strcmp(cmd, "add-nodes") && argc >= 2) {
        if (*ready)
            sim_free(s);
        sim_params_t p = {
            .founders = atoi(argv[1]),
            .pre_vote = opt(argc, argv, "pre-vote", 1),
            .check_quorum = opt(argc, argv, "check-quorum", 1),
            .election_min = 10,
            .election_max = 20,
            .heartbeat = 2,
            .max_inflight = (unsigned)opt(argc, argv, "inflight", 8),
            .max_entries = (unsigned)opt(argc, argv, "batch", 16),
            .snapshot_threshold = (uint64_t)opt(argc, argv, "snapshot", 0),
            .snapshot_trailing = (uint64_t)opt(argc, argv, "trailing", 0),
            .delay_max_ms = 1,
        };
        if (p.founders < 1 || p.founders >= SIM_MAX_NODES) {
            fprintf(out, "bad member count\n");
            return;
        }
        s->capture = out;
        sim_init_scripted(s, &p);
        *ready = true;
        return;
    }
    if (!*ready) {
        fprintf(out, "add-nodes first\n");
        return;
    }
    s->capture = out;
    sim_node_t *n = argc >= 2 ? node_arg(s, argv[1]) : NULL;
    raft_event_t ev = {0};
    int rc;
    if (!strcmp(cmd, "stabilize")) {
        sim_drain(s);
    } else if (!strcmp(cmd, "deliver") && argc == 2) {
        uint64_t until = s->stats.delivered + (uint64_t)atoi(argv[1]);
        while (s->stats.delivered < until && sim_step_one(s))
            ;
    } else if (!strcmp(cmd, "drop")) {
        fprintf(out, "dropped %llu messages\n", (unsigned long long)sim_drop_messages(s));
    } else if (!strcmp(cmd, "heal")) {
        sim_heal(s);
    } else if (!strcmp(cmd, "status")) {
        for (int i = 1; i <= s->n_nodes; i++) {
            bool listed = argc == 1;
            for (int k = 1; k < argc; k++)
                listed |= atoi(argv[k]) == i;
            if (listed && s->nodes[i].exists)
                status_line(s, &s->nodes[i], out);
        }
    } else if (!strcmp(cmd, "cut") && argc == 3) {
        int a = atoi(argv[1]), b = atoi(argv[2]);
        if (a > 0 && b > 0 && a < SIM_MAX_NODES && b < SIM_MAX_NODES)
            s->blocked[a][b] = s->blocked[b][a] = true;
    } else if (!n) {
        fprintf(out, "unknown command or member: %s\n", cmd);
    } else if (!strcmp(cmd, "isolate")) {
        for (int i = 1; i < SIM_MAX_NODES; i++)
            s->blocked[n->id][i] = s->blocked[i][n->id] = true;
    } else if (!strcmp(cmd, "crash")) {
        sim_node_crash(s, n);
    } else if (!strcmp(cmd, "restart")) {
        if (!n->up)
            sim_node_restart(s, n);
    } else if (!n->up) {
        fprintf(out, "n%llu is down\n", (unsigned long long)n->id);
    } else if (!strcmp(cmd, "log")) {
        log_lines(n, out);
    } else if (!strcmp(cmd, "tick") || !strcmp(cmd, "campaign") || !strcmp(cmd, "heartbeat")) {
        ev.type = RAFT_EVENT_TICK;
        if (!strcmp(cmd, "tick")) {
            int k = argc >= 3 ? atoi(argv[2]) : 1;
            for (int i = 0; i < k && n->up; i++)
                step_event(s, n, &ev);
        } else if (!strcmp(cmd, "campaign")) { /* until it starts a (pre-)election */
            raft_role_t role = n->role;
            raft_term_t term = n->term;
            uint64_t sent = s->stats.messages;
            for (int i = 0; i < 100 && n->up && n->role == role && n->term == term &&
                            s->stats.messages == sent;
                 i++)
                step_event(s, n, &ev);
        } else {
            for (unsigned i = 0; i < s->p.heartbeat && n->up; i++)
                step_event(s, n, &ev);
        }
    } else if (!strcmp(cmd, "propose") && argc >= 3) {
        raft_entry_t e = {
            .type = RAFT_ENTRY_NORMAL, .data = (const uint8_t *)argv[2], .len = strlen(argv[2])};
        ev.type = RAFT_EVENT_PROPOSE;
        ev.propose.entries = &e;
        ev.propose.n_entries = 1;
        sim_proposing_op = s->next_op++;
        rc = step_event(s, n, &ev);
        if (rc == 0 && n->n_props)
            fprintf(out, "propose: ok, index %llu term %llu\n",
                    (unsigned long long)n->props[n->n_props - 1].index,
                    (unsigned long long)n->props[n->n_props - 1].term);
        else
            fprintf(out, "propose: %s\n", err_name(rc));
    } else if (!strcmp(cmd, "read") && argc >= 3) {
        if (n->n_reads == n->cap_reads) {
            n->cap_reads = n->cap_reads ? n->cap_reads * 2 : 16;
            n->reads = realloc(n->reads, n->cap_reads * sizeof *n->reads);
        }
        uint64_t ctx = strtoull(argv[2], NULL, 10);
        n->reads[n->n_reads++] = (sim_read_t){ctx, s->acked_max, 0};
        ev.type = RAFT_EVENT_READ_INDEX;
        ev.read_index.ctx = ctx;
        rc = step_event(s, n, &ev);
        if (rc < 0)
            n->n_reads--;
        fprintf(out, "read %llu: %s\n", (unsigned long long)ctx, err_name(rc));
    } else if (!strcmp(cmd, "transfer") && argc >= 3) {
        ev.type = RAFT_EVENT_TRANSFER;
        ev.transfer.target = strtoull(argv[2], NULL, 10);
        rc = step_event(s, n, &ev);
        fprintf(out, "transfer: %s\n", err_name(rc));
    } else if ((!strcmp(cmd, "add-learner") || !strcmp(cmd, "promote") || !strcmp(cmd, "remove")) &&
               argc >= 3) {
        int node = atoi(argv[2]);
        ev.type = RAFT_EVENT_CONF_CHANGE;
        ev.conf_change.type = !strcmp(cmd, "add-learner") ? RAFT_CHANGE_ADD_LEARNER
                              : !strcmp(cmd, "promote")   ? RAFT_CHANGE_PROMOTE
                                                          : RAFT_CHANGE_REMOVE;
        ev.conf_change.node = (raft_id_t)node;
        rc = step_event(s, n, &ev);
        fprintf(out, "%s %d: %s\n", cmd, node, err_name(rc));
        if (rc == 0 && ev.conf_change.type == RAFT_CHANGE_ADD_LEARNER && node > 0 &&
            node < SIM_MAX_NODES && !s->nodes[node].exists)
            sim_node_create(s, node, false);
    } else {
        fprintf(out, "unknown command: %s\n", cmd);
    }
}

/* ---- files ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static bool run_file(const char *path, bool rewrite) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("testdata: %s: %s\n", path, strerror(errno));
        return false;
    }
    sim_t *s = calloc(1, sizeof *s);
    bool ready = false, ok = true;
    buf_t result = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len == 0 || line[0] == '\n' || line[0] == '#') {
            buf_add(&result, line, (size_t)len);
            continue;
        }
        /* a command, then ---- and the expected output up to a blank line */
        char cmdline[512];
        snprintf(cmdline, sizeof cmdline, "%s", line);
        cmdline[strcspn(cmdline, "\n")] = 0;
        int cmd_line = lineno;
        buf_t expected = {0};
        buf_add(&expected, "", 0);
        if ((len = getline(&line, &cap, f)) < 0 || strcmp(line, "----\n")) {
            printf("testdata: %s:%d: expected ---- after the command\n", path, cmd_line);
            ok = false;
            break;
        }
        lineno++;
        while ((len = getline(&line, &cap, f)) >= 0) {
            lineno++;
            if (line[0] == '\n')
                break;
            buf_add(&expected, line, (size_t)len);
        }
        char *argv[MAX_ARGS];
        int argc = 0;
        char work[512];
        snprintf(work, sizeof work, "%s", cmdline);
        for (char *tok = strtok(work, " \t"); tok && argc < MAX_ARGS; tok = strtok(NULL, " \t"))
            argv[argc++] = tok;
        char *out_text = NULL;
        size_t out_len = 0;
        FILE *out = open_memstream(&out_text, &out_len);
        if (argc)
            run_command(s, &ready, argc, argv, out);
        s->capture = NULL;
        fclose(out);
        if (strcmp(out_text, expected.p)) {
            ok = false;
            if (!rewrite)
                printf("testdata: %s:%d: %s\n---- expected\n%s---- got\n%s----\n", path, cmd_line,
                       cmdline, expected.p, out_text);
        }
        buf_add(&result, cmdline, strlen(cmdline));
        buf_add(&result, "\n----\n", 6);
        buf_add(&result, out_text, out_len);
        buf_add(&result, "\n", 1);
        free(out_text);
        free(expected.p);
        if (len < 0)
            break;
    }
    free(line);
    fclose(f);
    if (ready)
        sim_free(s);
    free(s);
    if (rewrite && result.p) {
        /* one blank line at the end, as written */
        while (result.n >= 2 && result.p[result.n - 1] == '\n' && result.p[result.n - 2] == '\n')
            result.p[--result.n] = 0;
        FILE *w = fopen(path, "w");
        if (w) {
            fwrite(result.p, 1, result.n, w);
            fclose(w);
        }
        ok = true;
    }
    free(result.p);
    return ok;
}

static int txt_filter(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 4 && !strcmp(e->d_name + n - 4, ".txt");
}

int sim_script_run_dir(const char *dir, bool rewrite, int *ret_files) {
    struct dirent **list;
    int n = scandir(dir, &list, txt_filter, alphasort);
    int failed = 0;
    *ret_files = n > 0 ? n : 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        if (!run_file(path, rewrite))
            failed++;
        free(list[i]);
    }
    if (n > 0)
        free(list);
    return failed;
}
