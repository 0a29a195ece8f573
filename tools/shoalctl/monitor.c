/* monitor — prints the events daemons publish on their PUB sockets as they happen.
 *
 * Events are observation only (DESIGN §2): a subscriber that connects late or falls behind
 * misses some, and nothing here tries to recover them. Each event is [topic, shoal.bus.Event];
 * the line printed is `TIME KIND/INSTANCE TOPIC TEXT`, or one compact JSON object per line with
 * --json. `--count N` stops after N events and `--timeout S` after S seconds, so scripts and
 * tests can use it; when both are given and fewer than N events came in time, the exit code is 1.
 *
 * The set of daemons is fixed at start: the ones named, or every registered daemon (plus the
 * store at its fixed endpoint). A daemon that starts later is not picked up. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "pbjson.h"

static void print_event(ctl_t *ctl, const char *topic, const Shoal__Bus__Event *ev) {
    if (ctl->json) {
        json_t *j = pbjson_encode(&ev->base, 0);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (text)
            puts(text);
        free(text);
        json_decref(j);
    } else {
        time_t secs = (time_t)(ev->ts_ms / 1000);
        struct tm tm;
        char when[32] = "--:--:--";
        if (localtime_r(&secs, &tm))
            strftime(when, sizeof when, "%H:%M:%S", &tm);
        const char *text = ev->text;
        printf("%s.%03d %s/%s %s %s\n", when, (int)(ev->ts_ms % 1000 + 1000) % 1000, ev->kind,
               ev->instance, *ev->topic ? ev->topic : topic, text);
    }
    fflush(stdout);
}

/* Adds a subscriber for `d` unless one to the same endpoint exists. */
static int subscribe(ctl_t *ctl, const ctl_daemon_t *d, zsock_t **subs, char (*eps)[PATH_MAX + 32],
                     size_t *nsubs, size_t max) {
    for (size_t i = 0; i < *nsubs; i++)
        if (!strcmp(eps[i], d->pub))
            return 0;
    if (*nsubs == max)
        return ctl_fail("monitor: too many daemons (at most %zu)", max);
    zsock_t *s = bus_subscriber_new(ctl->identity, d->pub, d->key, "");
    if (!s)
        return ctl_fail("monitor: cannot subscribe to %s%s%s at %s", d->kind,
                        *d->instance ? "/" : "", d->instance, d->pub);
    snprintf(eps[*nsubs], sizeof eps[*nsubs], "%s", d->pub);
    subs[(*nsubs)++] = s;
    return 0;
}

#define MONITOR_MAX_DAEMONS 256

int cmd_monitor(ctl_t *ctl, int argc, char **argv) {
    double timeout_s = 0;
    if (ctl->timeout_arg) {
        char *end;
        timeout_s = strtod(ctl->timeout_arg, &end);
        if (*end || !(timeout_s > 0) || !isfinite(timeout_s))
            return ctl_fail("monitor: --timeout takes seconds > 0 (got \"%s\")", ctl->timeout_arg);
    }
    zsock_t **subs = calloc(MONITOR_MAX_DAEMONS, sizeof *subs);
    char(*eps)[PATH_MAX + 32] = calloc(MONITOR_MAX_DAEMONS, sizeof *eps);
    size_t nsubs = 0;
    int rc = 0;
    if (!subs || !eps) {
        rc = ctl_fail("out of memory");
        goto out;
    }
    ctl_daemon_t *daemons = NULL;
    size_t n = 0;
    if (argc == 0) {
        if (ctl_resolve_all(ctl, &daemons, &n) != 0) {
            rc = 1;
            goto out;
        }
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = subscribe(ctl, &daemons[i], subs, eps, &nsubs, MONITOR_MAX_DAEMONS);
        free(daemons);
    }
    for (int a = 0; rc == 0 && a < argc; a++) {
        if (ctl_resolve(ctl, argv[a], true, &daemons, &n) != 0) {
            rc = 1;
            break;
        }
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = subscribe(ctl, &daemons[i], subs, eps, &nsubs, MONITOR_MAX_DAEMONS);
        free(daemons);
    }
    if (rc != 0)
        goto out;
    if (nsubs == 0) {
        rc = ctl_fail("monitor: no daemon to monitor");
        goto out;
    }

    zpoller_t *poller = zpoller_new(NULL);
    for (size_t i = 0; poller && i < nsubs; i++)
        zpoller_add(poller, subs[i]);
    if (!poller) {
        rc = ctl_fail("out of memory");
        goto out;
    }
    int64_t deadline = timeout_s > 0 ? clock_mono_ms() + (int64_t)(timeout_s * 1000) : 0;
    long seen = 0;
    bool interrupted = false;
    while (ctl->count == 0 || seen < ctl->count) {
        int wait_ms = -1;
        if (deadline) {
            int64_t left = deadline - clock_mono_ms();
            if (left <= 0)
                break;
            wait_ms = left > 1000 ? 1000 : (int)left;
        }
        zsock_t *which = zpoller_wait(poller, wait_ms);
        if (!which) {
            if (zpoller_terminated(poller)) {
                interrupted = true; /* Ctrl-C: the user stopped it, not a failure */
                break;
            }
            continue;
        }
        zmsg_t *msg = zmsg_recv(which);
        if (!msg)
            continue;
        char *topic = zmsg_popstr(msg);
        zframe_t *body = zmsg_pop(msg);
        Shoal__Bus__Event *ev =
            body ? shoal__bus__event__unpack(NULL, zframe_size(body), zframe_data(body)) : NULL;
        if (ev) {
            print_event(ctl, topic ? topic : "", ev);
            seen++;
            shoal__bus__event__free_unpacked(ev, NULL);
        }
        zframe_destroy(&body);
        zstr_free(&topic);
        zmsg_destroy(&msg);
    }
    zpoller_destroy(&poller);
    if (ctl->count > 0 && seen < ctl->count && deadline && !interrupted)
        rc = ctl_fail("monitor: %ld of %ld events before the %g s timeout", seen, ctl->count,
                      timeout_s);
out:
    for (size_t i = 0; subs && i < nsubs; i++)
        zsock_destroy(&subs[i]);
    free(subs);
    free(eps);
    return rc;
}
