/* shoal-sim — the deterministic simulator of shoal-store's Raft core (DESIGN §3, issue 4).
 *
 * From a seed it builds a cluster (3 or 5 founding members, in some seeds learners added,
 * promoted and members removed), runs it for --steps events under a random workload and random
 * faults — message loss, duplication, reordering and delays, symmetric and one-way partitions,
 * crashes that lose unsynced writes, restarts from the durable state, leadership transfers,
 * snapshots with compaction and InstallSnapshot to laggards, clock skew — then heals everything
 * and requires the cluster to converge. After every step the safety properties of sim_check.c
 * are checked. Everything comes from the seed: a failing seed replays exactly.
 *
 *   shoal-sim --seeds N            run seeds 1..N (default 100), print a one-line summary
 *   shoal-sim --seed N [--trace]   run one seed; --trace prints every event (same output twice)
 *   --steps N                      events per seed before converging (default 10000)
 *   --jobs J                       worker processes for --seeds (default: online CPUs, max 8)
 *   --testdata DIR [--rewrite]     run the data-driven trace tests, DIR/NAME.txt (sim_script.c);
 *                                  --seeds also runs tests/sim/testdata when it exists
 *
 * On a violation it prints the seed, the step, the property and the last SIM_TRACE_RING lines
 * of that seed's trace (replayed with tracing on), and exits 1. The last line of output is
 * always "<seeds> seeds, <violations> violations, <steps> steps, <seconds> s". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

void sim_trace(sim_t *s, const char *fmt, ...) {
    if (!s->trace_print && !s->trace_ring && !s->capture)
        return;
    char line[640];
    if (s->capture) { /* scripts: no clock, no step numbers */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        fprintf(s->capture, "%s\n", line);
        return;
    }
    int k = snprintf(line, sizeof line, "[%7llu ms #%llu] ", (unsigned long long)s->now,
                     (unsigned long long)s->step);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, sizeof line - (size_t)k, fmt, ap);
    va_end(ap);
    if (s->trace_print)
        puts(line);
    if (s->trace_ring) {
        free(s->ring[s->ring_next]);
        s->ring[s->ring_next] = strdup(line);
        s->ring_next = (s->ring_next + 1) % SIM_TRACE_RING;
        if (s->ring_n < SIM_TRACE_RING)
            s->ring_n++;
    }
}

void sim_violation(sim_t *s, const char *fmt, ...) {
    if (s->failed)
        return;
    s->failed = true;
    s->violation_step = s->step;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->violation, sizeof s->violation, fmt, ap);
    va_end(ap);
    sim_trace(s, "VIOLATION: %s", s->violation);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct totals {
    uint64_t seeds, violations;
    sim_stats_t st;
} totals_t;

static void add_stats(sim_stats_t *a, const sim_stats_t *b) {
    a->steps += b->steps;
    a->messages += b->messages;
    a->dropped += b->dropped;
    a->writes_acked += b->writes_acked;
    a->reads_served += b->reads_served;
    a->reads_dropped += b->reads_dropped;
    a->elections += b->elections;
    a->snapshots_installed += b->snapshots_installed;
    a->crashes += b->crashes;
    a->transfers += b->transfers;
    a->conf_changes += b->conf_changes;
}

static void print_stats(const char *what, const sim_stats_t *st) {
    printf("%s: %llu steps, %llu messages (%llu dropped), %llu elections, %llu writes acked, "
           "%llu reads served (%llu dropped), %llu snapshots installed, %llu crashes, "
           "%llu transfers, %llu membership changes\n",
           what, (unsigned long long)st->steps, (unsigned long long)st->messages,
           (unsigned long long)st->dropped, (unsigned long long)st->elections,
           (unsigned long long)st->writes_acked, (unsigned long long)st->reads_served,
           (unsigned long long)st->reads_dropped, (unsigned long long)st->snapshots_installed,
           (unsigned long long)st->crashes, (unsigned long long)st->transfers,
           (unsigned long long)st->conf_changes);
}

static sim_t sim; /* big: keep it off the stack */

/* Runs one seed; on a violation prints it and, once per process, the replayed trace tail. */
static bool run_seed(uint64_t seed, uint64_t steps, bool trace, bool *trace_shown, totals_t *t) {
    sim.trace_print = trace;
    sim.trace_ring = false;
    sim_init(&sim, seed, steps);
    sim_run(&sim);
    bool ok = !sim.failed;
    t->seeds++;
    add_stats(&t->st, &sim.stats);
    if (trace)
        print_stats("seed", &sim.stats);
    if (!ok) {
        t->violations++;
        uint64_t step = sim.violation_step, at = sim.now;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", sim.violation);
        sim_free(&sim);
        if (!trace && !*trace_shown) {
            *trace_shown = true;
            sim.trace_print = false;
            sim.trace_ring = true;
            sim_init(&sim, seed, steps);
            sim_run(&sim);
            printf("---- seed %llu: last %zu trace lines ----\n", (unsigned long long)seed,
                   sim.ring_n);
            for (size_t i = 0; i < sim.ring_n; i++) {
                size_t k = (sim.ring_next + SIM_TRACE_RING - sim.ring_n + i) % SIM_TRACE_RING;
                puts(sim.ring[k]);
            }
            printf("---- replay: shoal-sim --seed %llu --steps %llu --trace ----\n",
                   (unsigned long long)seed, (unsigned long long)steps);
            sim_free(&sim);
        }
        printf("seed %llu: VIOLATION at step %llu (t=%llu ms): %s\n", (unsigned long long)seed,
               (unsigned long long)step, (unsigned long long)at, msg);
        fflush(stdout);
        return false;
    }
    sim_free(&sim);
    return true;
}

static void usage(void) {
    fprintf(stderr, "usage: shoal-sim [--seeds N | --seed N] [--steps N] [--trace] [--jobs J]\n"
                    "       shoal-sim --testdata DIR [--rewrite]\n");
    exit(2);
}

#define DEFAULT_TESTDATA "tests/sim/testdata"

int main(int argc, char **argv) {
    uint64_t seeds = 100, one = 0, steps = 10000;
    bool trace = false, rewrite = false;
    const char *testdata = NULL;
    long jobs = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--trace"))
            trace = true;
        else if (!strcmp(a, "--seeds") && i + 1 < argc)
            seeds = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--seed") && i + 1 < argc)
            one = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--steps") && i + 1 < argc)
            steps = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--jobs") && i + 1 < argc)
            jobs = strtol(argv[++i], NULL, 10);
        else if (!strcmp(a, "--testdata") && i + 1 < argc)
            testdata = argv[++i];
        else if (!strcmp(a, "--rewrite"))
            rewrite = true;
        else
            usage();
    }
    if (jobs < 1)
        jobs = 1;
    if (jobs > 8)
        jobs = 8;
    setvbuf(stdout, NULL, _IOLBF, 0);
    double t0 = now_s();
    totals_t t = {0};
    bool shown = false;
    if (testdata || (!one && !access(DEFAULT_TESTDATA, R_OK))) {
        int files = 0;
        int failed = sim_script_run_dir(testdata ? testdata : DEFAULT_TESTDATA, rewrite, &files);
        printf("testdata: %d files, %d failed%s\n", files, failed, rewrite ? " (rewritten)" : "");
        t.violations += (uint64_t)failed;
        if (testdata) {
            printf("%d scripts, %d failed, %.0f s\n", files, failed, now_s() - t0);
            return failed ? 1 : 0;
        }
    }
    if (one) {
        run_seed(one, steps, trace, &shown, &t);
    } else {
        if ((uint64_t)jobs > seeds)
            jobs = (long)(seeds ? seeds : 1);
        int fds[8][2];
        pid_t pids[8];
        for (long j = 0; j < jobs; j++) {
            if (pipe(fds[j]) < 0 || (pids[j] = fork()) < 0) {
                perror("shoal-sim");
                return 2;
            }
            if (pids[j] == 0) {
                close(fds[j][0]);
                totals_t mine = {0};
                for (uint64_t seed = 1 + (uint64_t)j; seed <= seeds; seed += (uint64_t)jobs)
                    run_seed(seed, steps, false, &shown, &mine);
                if (write(fds[j][1], &mine, sizeof mine) != (ssize_t)sizeof mine)
                    _exit(2);
                _exit(0);
            }
            close(fds[j][1]);
        }
        for (long j = 0; j < jobs; j++) {
            totals_t part = {0};
            ssize_t got = read(fds[j][0], &part, sizeof part);
            int status = 0;
            waitpid(pids[j], &status, 0);
            close(fds[j][0]);
            if (got != (ssize_t)sizeof part || !WIFEXITED(status) || WEXITSTATUS(status)) {
                fprintf(stderr, "shoal-sim: worker %ld died (status %d)\n", j, status);
                t.violations++;
                continue;
            }
            t.seeds += part.seeds;
            t.violations += part.violations;
            add_stats(&t.st, &part.st);
        }
        print_stats("total", &t.st);
    }
    printf("%llu seeds, %llu violations, %llu steps, %.0f s\n", (unsigned long long)t.seeds,
           (unsigned long long)t.violations, (unsigned long long)t.st.steps, now_s() - t0);
    return t.violations ? 1 : 0;
}
