/* Fuzz target: what the scheduler reads from the store is hostile. The input is split on the
 * byte sequence "\n--\n" into protobuf-encoded objects: the first half of the pieces are read as
 * shoal.Node, the rest as shoal.Task (as the daemon's watch feeds them, ids as given, revisions
 * increasing). Tasks arrive twice (PENDING as written, then again after a tick with every decision
 * committed or aborted) so spread preferences, binpack, random, host ports, constraints,
 * platforms and max replicas all meet odd values. Must never crash, leak or loop, and a tick must
 * never assign a task to a node the scheduler does not know. Seeds:
 * tests/fuzz/corpus/scheduler_placement/ (made by the scheduler's unit fixtures). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/scheduler/scheduler.h"

#define MAX_PIECES 64

static size_t split(const uint8_t *data, size_t size, const uint8_t **p, size_t *len) {
    size_t n = 0, start = 0;
    for (size_t i = 0; i + 4 <= size && n < MAX_PIECES - 1; i++) {
        if (memcmp(data + i, "\n--\n", 4) == 0) {
            p[n] = data + start;
            len[n++] = i - start;
            start = i + 4;
            i += 3;
        }
    }
    p[n] = data + start;
    len[n++] = size - start;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p[MAX_PIECES];
    size_t len[MAX_PIECES];
    size_t n = split(data, size, p, len);
    size_t n_nodes = (n + 1) / 2;
    scheduler_t *s = scheduler_new();
    if (!s)
        return 0;
    scheduler_set_seed(s, size);
    scheduler_set_default_strategy(s, (placement_strategy_t)(size % 3));
    int64_t rev = 1;
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++) {
            if (i < n_nodes) {
                Shoal__Node *node = shoal__node__unpack(NULL, len[i], p[i]);
                if (node && round == 0)
                    scheduler_put_node(s, node); /* takes it; refuses one without an id */
                else if (node)
                    shoal__node__free_unpacked(node, NULL);
            } else {
                Shoal__Task *t = shoal__task__unpack(NULL, len[i], p[i]);
                if (t)
                    scheduler_put_task(s, t, rev++);
            }
        }
        const scheduler_decision_t *d = NULL;
        size_t nd = 0;
        if (scheduler_tick(s, 1700000000000LL, &d, &nd) < 0)
            break;
        char **ids = calloc(nd ? nd : 1, sizeof *ids);
        for (size_t i = 0; ids && i < nd; i++) {
            if (d[i].node_id && scheduler_node_tasks(s, d[i].node_id) <= 0)
                abort(); /* assigned to a node that counts nothing: the sums drifted */
            ids[i] = strdup(d[i].task_id);
        }
        for (size_t i = 0; ids && i < nd; i++) {
            if (!ids[i])
                continue;
            if (i % 3 == 0)
                scheduler_abort(s, ids[i], i % 2 == 0);
            else
                scheduler_commit(s, ids[i], rev++);
            free(ids[i]);
        }
        free(ids);
    }
    scheduler_destroy(&s);
    return 0;
}
