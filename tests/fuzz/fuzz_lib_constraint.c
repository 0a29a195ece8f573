/* Fuzz target for the placement constraint parser (services/scheduler/constraint.c).
 *
 * Input: one or more expressions separated by '\n' (embedded NULs end an expression early).
 * Checks, beyond "no crash": a failed parse always explains itself in one line that names the
 * expression; a successful parse formats back to text that parses to the same constraint, and
 * matching never fails on a node that lacks every optional field. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constraint.h"

static void check(int ok, const char *what, const char *expr) {
    if (!ok) {
        fprintf(stderr, "fuzz_scheduler_constraint: %s: \"%s\"\n", what, expr);
        abort();
    }
}

static void one(const char *expr) {
    constraint_t c;
    char err[256] = "";
    int r = constraint_parse(expr, &c, err, sizeof err);
    if (r < 0) {
        check(strncmp(err, "constraint", 10) == 0, "error does not start with constraint", expr);
        check(strchr(err, '\n') == NULL, "error spans lines", expr);
        return;
    }
    check(c.value && c.value[0], "empty value accepted", expr);

    /* Round trip: format, parse again, same constraint. */
    char text[2 * CONSTRAINT_MAX_LEN + 64];
    constraint_format(&c, text, sizeof text);
    constraint_t again;
    check(constraint_parse(text, &again, NULL, 0) == 0, "formatted text does not parse", expr);
    check(again.key == c.key && again.op == c.op && strcmp(again.value, c.value) == 0,
          "round trip changed the constraint", expr);
    check((!c.label && !again.label) || (c.label && again.label && !strcmp(c.label, again.label)),
          "round trip changed the label", expr);
    constraint_clear(&again);

    /* Matching on a bare node and on a node with every field set. */
    Shoal__Node bare = SHOAL__NODE__INIT;
    bool m = constraint_match(&c, &bare);
    check(m == (c.op == CONSTRAINT_OP_NE), "bare node: absent field must read as empty", expr);

    Shoal__Node n = SHOAL__NODE__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    Shoal__Platform plat = SHOAL__PLATFORM__INIT;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__EngineDescription eng = SHOAL__ENGINE_DESCRIPTION__INIT;
    Shoal__Label lab = SHOAL__LABEL__INIT, *labs[1] = {&lab};
    meta.id = c.value;
    n.meta = &meta;
    desc.hostname = c.value;
    plat.os = c.value;
    plat.architecture = c.value;
    desc.platform = &plat;
    lab.key = c.label ? c.label : "x";
    lab.value = c.value;
    ann.labels = labs;
    ann.n_labels = 1;
    spec.annotations = &ann;
    eng.labels = labs;
    eng.n_labels = 1;
    desc.engine = &eng;
    n.description = &desc;
    n.spec = &spec;
    if (c.key != CONSTRAINT_KEY_ROLE)
        check(constraint_match(&c, &n) == (c.op == CONSTRAINT_OP_EQ),
              "node holding the value must match ==", expr);
    constraint_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *exprs[16];
    size_t n = 0;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line && n < 16;
         line = strtok_r(NULL, "\n", &save)) {
        one(line);
        exprs[n++] = line;
    }
    constraint_list_t *list = NULL;
    char err[256];
    if (constraint_list_parse(exprs, n, &list, err, sizeof err) == 0) {
        Shoal__Node bare = SHOAL__NODE__INIT;
        (void)constraint_list_match(list, &bare);
        constraint_list_destroy(&list);
    }
    free(buf);
    return 0;
}
