/* constraint — placement constraints ("node.labels.zone==a") as the orchestrator reads them:
 * parsed to check a spec (validate.c) and matched against nodes to decide where a global service
 * runs (reconcile.c). The scheduler has its own parser; both accept the same syntax. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "objects.pb-c.h"

enum constraint_key {
    CONSTRAINT_NODE_ID,
    CONSTRAINT_NODE_HOSTNAME,
    CONSTRAINT_NODE_ROLE,
    CONSTRAINT_NODE_PLATFORM_OS,
    CONSTRAINT_NODE_PLATFORM_ARCH,
    CONSTRAINT_NODE_LABEL,
    CONSTRAINT_ENGINE_LABEL,
};

#define CONSTRAINT_TEXT_MAX 256

typedef struct constraint {
    enum constraint_key key;
    bool equal;                      /* "==" when true, "!=" when false */
    char label[CONSTRAINT_TEXT_MAX]; /* the X of node.labels.X / engine.labels.X */
    char value[CONSTRAINT_TEXT_MAX];
} constraint_t;

/* Parses one expression: `<key> (==|!=) <value>`, spaces around the parts allowed. Returns 0, or
 * -EINVAL with a reason ("unknown key \"node.foo\"") in err. */
int constraint_parse(const char *expr, constraint_t *ret, char *err, size_t errlen);

/* Whether `node` satisfies the constraint. Label values compare exactly, the other keys
 * case-insensitively; a missing label never equals anything. */
bool constraint_match(const constraint_t *c, const Shoal__Node *node);

/* Whether `node` satisfies every expression of `exprs`; an expression that does not parse never
 * matches (specs are validated before they are stored, so this only guards old data). */
bool constraint_match_all(char *const *exprs, size_t n, const Shoal__Node *node);
