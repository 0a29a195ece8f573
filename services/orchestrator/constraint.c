/* constraint — parse and match placement constraints for the orchestrator.
 *
 * Syntax (SwarmKit's): `<key> <op> <value>` where key is node.id, node.hostname, node.role,
 * node.platform.os, node.platform.arch, node.labels.<X> or engine.labels.<X>, op is `==` or
 * `!=`, and value is non-empty. Spaces around the three parts are ignored. Label names are
 * [A-Za-z0-9_.-]+ and values use SwarmKit's alphabet (letters, digits, spaces, :-_.*()?+[]\^$|/),
 * the same rules as the scheduler's parser, so a spec accepted here is placeable there.
 * Matching: label values compare exactly; id, hostname, role and platform case-insensitively
 * (SwarmKit's EqualFold). A label the node does not have is "not equal" to every value, so
 * `node.labels.zone!=a` holds on a node without a zone label.
 *
 * Called by validate.c (syntax only, to name the bad field) and by reconcile.c (global services
 * run on the nodes that match). Pure functions, no allocation. */
#include "constraint.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    enum constraint_key key;
} fixed_keys[] = {
    {"node.id", CONSTRAINT_NODE_ID},
    {"node.hostname", CONSTRAINT_NODE_HOSTNAME},
    {"node.role", CONSTRAINT_NODE_ROLE},
    {"node.platform.os", CONSTRAINT_NODE_PLATFORM_OS},
    {"node.platform.arch", CONSTRAINT_NODE_PLATFORM_ARCH},
};

/* Copies [b, e) without surrounding spaces into out (cap bytes). -E2BIG when it does not fit. */
static int copy_trimmed(const char *b, const char *e, char *out, size_t cap) {
    while (b < e && isspace((unsigned char)*b))
        b++;
    while (e > b && isspace((unsigned char)e[-1]))
        e--;
    size_t n = (size_t)(e - b);
    if (n + 1 > cap)
        return -E2BIG;
    memcpy(out, b, n);
    out[n] = '\0';
    return 0;
}

int constraint_parse(const char *expr, constraint_t *ret, char *err, size_t errlen) {
    constraint_t c = {0};
    if (!expr) {
        snprintf(err, errlen, "empty constraint");
        return -EINVAL;
    }
    const char *eq = strstr(expr, "==");
    const char *ne = strstr(expr, "!=");
    const char *op = eq;
    c.equal = true;
    if (!op || (ne && ne < op)) {
        op = ne;
        c.equal = false;
    }
    if (!op) {
        snprintf(err, errlen, "expected <key>==<value> or <key>!=<value>");
        return -EINVAL;
    }
    char key[CONSTRAINT_TEXT_MAX];
    if (copy_trimmed(expr, op, key, sizeof key) < 0 ||
        copy_trimmed(op + 2, expr + strlen(expr), c.value, sizeof c.value) < 0) {
        snprintf(err, errlen, "longer than %d characters", CONSTRAINT_TEXT_MAX - 1);
        return -EINVAL;
    }
    if (!key[0]) {
        snprintf(err, errlen, "missing key before \"%s\"", c.equal ? "==" : "!=");
        return -EINVAL;
    }
    if (strstr(c.value, "==") || strstr(c.value, "!=")) {
        snprintf(err, errlen, "more than one operator");
        return -EINVAL;
    }
    if (!c.value[0]) {
        snprintf(err, errlen, "missing value after \"%s\"", c.equal ? "==" : "!=");
        return -EINVAL;
    }
    for (const char *v = c.value; *v; v++) {
        if (!isalnum((unsigned char)*v) && !strchr(" \t:-_.*()?+[]\\^$|/", *v)) {
            snprintf(err, errlen,
                     "value \"%.64s\" may only use letters, digits, spaces and "
                     ":-_.*()?+[]\\^$|/",
                     c.value);
            return -EINVAL;
        }
    }
    bool known = false;
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++) {
        if (!strcasecmp(key, fixed_keys[i].name)) {
            c.key = fixed_keys[i].key;
            known = true;
            break;
        }
    }
    if (!known) {
        const char *label = NULL;
        if (!strncasecmp(key, "node.labels.", 12)) {
            c.key = CONSTRAINT_NODE_LABEL;
            label = key + 12;
        } else if (!strncasecmp(key, "engine.labels.", 14)) {
            c.key = CONSTRAINT_ENGINE_LABEL;
            label = key + 14;
        }
        if (!label) {
            snprintf(err, errlen, "unknown key \"%.64s\"", key);
            return -EINVAL;
        }
        if (!label[0]) {
            snprintf(err, errlen, "missing label name in \"%.64s\"", key);
            return -EINVAL;
        }
        for (const char *l = label; *l; l++) {
            if (!isalnum((unsigned char)*l) && *l != '_' && *l != '.' && *l != '-') {
                snprintf(err, errlen, "label name \"%.64s\" may only use letters, digits, _ . -",
                         label);
                return -EINVAL;
            }
        }
        snprintf(c.label, sizeof c.label, "%s", label);
    }
    *ret = c;
    return 0;
}

static const char *label_lookup(Shoal__Label *const *labels, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (labels[i] && labels[i]->key && !strcmp(labels[i]->key, key))
            return labels[i]->value ? labels[i]->value : "";
    return NULL;
}

bool constraint_match(const constraint_t *c, const Shoal__Node *node) {
    const char *actual = NULL;
    const Shoal__NodeDescription *d = node->description;
    switch (c->key) {
    case CONSTRAINT_NODE_ID:
        actual = node->meta ? node->meta->id : NULL;
        break;
    case CONSTRAINT_NODE_HOSTNAME:
        actual = d ? d->hostname : NULL;
        break;
    case CONSTRAINT_NODE_ROLE:
        actual = node->role == SHOAL__NODE_SPEC__ROLE__MANAGER ? "manager" : "worker";
        break;
    case CONSTRAINT_NODE_PLATFORM_OS:
        actual = d && d->platform ? d->platform->os : NULL;
        break;
    case CONSTRAINT_NODE_PLATFORM_ARCH:
        actual = d && d->platform ? d->platform->architecture : NULL;
        break;
    case CONSTRAINT_NODE_LABEL:
        if (node->spec && node->spec->annotations)
            actual = label_lookup(node->spec->annotations->labels,
                                  node->spec->annotations->n_labels, c->label);
        break;
    case CONSTRAINT_ENGINE_LABEL:
        if (d && d->engine)
            actual = label_lookup(d->engine->labels, d->engine->n_labels, c->label);
        break;
    }
    bool exact = c->key == CONSTRAINT_NODE_LABEL || c->key == CONSTRAINT_ENGINE_LABEL;
    bool same = actual && (exact ? !strcmp(actual, c->value) : !strcasecmp(actual, c->value));
    return c->equal ? same : !same;
}

bool constraint_match_all(char *const *exprs, size_t n, const Shoal__Node *node) {
    for (size_t i = 0; i < n; i++) {
        constraint_t c;
        char err[128];
        if (constraint_parse(exprs[i], &c, err, sizeof err) < 0 || !constraint_match(&c, node))
            return false;
    }
    return true;
}
