/* constraint — placement constraints ("node.labels.zone==a") parsed once and matched against
 * shoal.Node objects. Pure: no daemon state, no I/O. The orchestrator validates specs and places
 * global tasks with it, the scheduler filters nodes with it. See constraint.c for the grammar. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "objects.pb-c.h"

/* What a constraint looks at on the node. */
enum constraint_key {
    CONSTRAINT_KEY_NODE_ID,       /* node.id            meta.id */
    CONSTRAINT_KEY_HOSTNAME,      /* node.hostname      description.hostname */
    CONSTRAINT_KEY_ROLE,          /* node.role          role: "worker" | "manager" */
    CONSTRAINT_KEY_PLATFORM_OS,   /* node.platform.os   description.platform.os */
    CONSTRAINT_KEY_PLATFORM_ARCH, /* node.platform.arch description.platform.architecture */
    CONSTRAINT_KEY_NODE_LABEL,    /* node.labels.<name> spec.annotations.labels */
    CONSTRAINT_KEY_ENGINE_LABEL,  /* engine.labels.<name> description.engine.labels */
};

enum constraint_op {
    CONSTRAINT_OP_EQ, /* == */
    CONSTRAINT_OP_NE, /* != */
};

typedef struct constraint {
    enum constraint_key key;
    enum constraint_op op;
    char *label; /* label name for the *_LABEL keys (case-sensitive), else NULL */
    char *value; /* never empty */
} constraint_t;

/* A parsed list of constraints; a node matches when every constraint matches. */
typedef struct constraint_list {
    constraint_t *items;
    size_t count;
} constraint_list_t;

/* Longest label name or value accepted, in bytes. */
#define CONSTRAINT_MAX_LEN 1024

/* Parses one expression into *ret (free its strings with constraint_clear). On -EINVAL, errbuf
 * (if given) holds one line naming the expression and what is wrong with it, e.g.
 *   constraint "node.labels.zone=a": expected an operator (== or !=)
 * -ENOMEM on allocation failure. *ret is untouched on failure. */
int constraint_parse(const char *expr, constraint_t *ret, char *errbuf, size_t errlen);
void constraint_clear(constraint_t *c);

/* Parses `n` expressions; stops at the first bad one (errbuf names it). */
int constraint_list_parse(char *const *exprs, size_t n, constraint_list_t **ret, char *errbuf,
                          size_t errlen);
void constraint_list_destroy(constraint_list_t **self_p);

/* Does the node satisfy the constraint? An absent field (no hostname, no such label) reads as
 * the empty string, so "==" fails and "!=" matches, as in SwarmKit. */
bool constraint_match(const constraint_t *c, const Shoal__Node *node);
bool constraint_list_match(const constraint_list_t *list, const Shoal__Node *node);
/* Parses and matches in one go; an expression that does not parse never matches (specs are
 * validated before they are stored, so this only guards old data). */
bool constraint_match_all(char *const *exprs, size_t n, const Shoal__Node *node);

/* Parses a bare key ("node.labels.zone", "engine.labels.rack", "node.hostname", ...), as used by
 * placement preferences (spread=node.labels.zone). On success *ret_key is set and *ret_label
 * points into `text` at the label name (NULL for the fixed keys). -EINVAL for anything else. */
int constraint_key_parse(const char *text, enum constraint_key *ret_key, const char **ret_label);

/* What the node says for a key ("" when absent): the value constraints compare against, and the
 * branch value of a spread preference. `label` is the label name for the *_LABEL keys. Points into
 * the node (or a static string): valid while the node is. */
const char *constraint_node_value(const Shoal__Node *node, enum constraint_key key,
                                  const char *label);

/* Docker's architecture names: "x86_64" -> "amd64", "aarch64" -> "arm64", others unchanged; ""
 * for NULL. The platform filter and node.platform.arch compare normalised names, so a node that
 * reports x86_64 (Engine /info) matches a spec asking for amd64. */
const char *constraint_normal_arch(const char *arch);

/* "node.labels.zone==a" back into text (for logs and tests); returns buf. */
char *constraint_format(const constraint_t *c, char *buf, size_t len);
