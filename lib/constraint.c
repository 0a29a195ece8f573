/* constraint — placement constraints, as SwarmKit's manager/constraint.
 *
 * Grammar of one expression (surrounding spaces allowed around key, operator and value):
 *
 *   expr  := key op value
 *   key   := node.id | node.hostname | node.role | node.platform.os | node.platform.arch
 *          | node.labels.<name> | engine.labels.<name>       (key words case-insensitive)
 *   op    := "==" | "!="                                     (the first one in the text wins)
 *   name  := [A-Za-z0-9_.-]+                                 (case-sensitive)
 *   value := [A-Za-z0-9 :_.*()?+\[\]\\^$|/-]+                 (SwarmKit's value alphabet)
 *
 * Unlike SwarmKit, an unknown key is a parse error rather than a constraint that never matches:
 * the orchestrator calls constraint_parse() to validate specs, and a typo ("node.label.zone")
 * should be refused at `service create`, not leave tasks pending forever.
 *
 * Matching: label values (node and engine labels) compare exactly; node id, hostname, role and
 * platform compare case-insensitively (SwarmKit's EqualFold). A missing field or label reads as
 * "", which never equals a value (values are non-empty): "==" fails, "!=" matches.
 *
 * Pure code: depends only on the generated objects.pb-c.h; safe to link into any daemon. */
#include "constraint.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NODE_LABEL_PREFIX   "node.labels."
#define ENGINE_LABEL_PREFIX "engine.labels."

static const struct {
    const char *name;
    enum constraint_key key;
} fixed_keys[] = {
    {"node.id", CONSTRAINT_KEY_NODE_ID},
    {"node.hostname", CONSTRAINT_KEY_HOSTNAME},
    {"node.role", CONSTRAINT_KEY_ROLE},
    {"node.platform.os", CONSTRAINT_KEY_PLATFORM_OS},
    {"node.platform.arch", CONSTRAINT_KEY_PLATFORM_ARCH},
};

/* Writes `constraint "<expr>": <reason>` with the expression made printable and cut at 80
 * bytes, so an error line stays one readable line whatever the input. */
static void parse_error(char *errbuf, size_t errlen, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void parse_error(char *errbuf, size_t errlen, const char *expr, const char *fmt, ...) {
    if (!errbuf || errlen == 0)
        return;
    char shown[96];
    size_t n = 0;
    for (const char *p = expr; *p && n < 80; p++)
        shown[n++] = isprint((unsigned char)*p) ? *p : '?';
    if (expr[n] != '\0')
        memcpy(shown + n, "...", 3), n += 3;
    shown[n] = '\0';
    int off = snprintf(errbuf, errlen, "constraint \"%s\": ", shown);
    if (off < 0 || (size_t)off >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf + off, errlen - (size_t)off, fmt, ap);
    va_end(ap);
}

/* A fragment of the input made printable and cut at 64 bytes, for error lines. */
static const char *shown(char *buf, size_t size, const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < size && n < 64; i++)
        buf[n++] = isprint((unsigned char)s[i]) ? s[i] : '?';
    if (n < len && n + 4 <= size)
        memcpy(buf + n, "...", 3), n += 3;
    buf[n] = '\0';
    return buf;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t';
}

static bool is_label_name_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

static bool is_value_char(char c) {
    return isalnum((unsigned char)c) || strchr(" \t:-_.*()?+[]\\^$|/", c) != NULL;
}

/* [begin, end) without surrounding blanks. */
static void trim(const char **begin, const char **end) {
    while (*begin < *end && is_space(**begin))
        (*begin)++;
    while (*end > *begin && is_space((*end)[-1]))
        (*end)--;
}

static bool has_prefix_nocase(const char *s, size_t len, const char *prefix) {
    size_t plen = strlen(prefix);
    return len >= plen && strncasecmp(s, prefix, plen) == 0;
}

int constraint_parse(const char *expr, constraint_t *ret, char *errbuf, size_t errlen) {
    if (!expr || !ret) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "constraint: missing expression");
        return -EINVAL;
    }
    size_t len = strlen(expr);
    if (len > 2 * CONSTRAINT_MAX_LEN) {
        parse_error(errbuf, errlen, expr, "longer than %d bytes", 2 * CONSTRAINT_MAX_LEN);
        return -EINVAL;
    }
    const char *eq = strstr(expr, "==");
    const char *ne = strstr(expr, "!=");
    const char *op_at = eq;
    enum constraint_op op = CONSTRAINT_OP_EQ;
    if (ne && (!eq || ne < eq)) {
        op_at = ne;
        op = CONSTRAINT_OP_NE;
    }
    if (!op_at) {
        parse_error(errbuf, errlen, expr,
                    "expected an operator (== or !=) as in node.role==worker");
        return -EINVAL;
    }

    const char *kb = expr, *ke = op_at;
    const char *vb = op_at + 2, *ve = expr + len;
    trim(&kb, &ke);
    trim(&vb, &ve);
    size_t klen = (size_t)(ke - kb), vlen = (size_t)(ve - vb);

    constraint_t c = {.op = op};
    const char *label = NULL;
    size_t label_len = 0;
    bool known = false;
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++) {
        if (klen == strlen(fixed_keys[i].name) && strncasecmp(kb, fixed_keys[i].name, klen) == 0) {
            c.key = fixed_keys[i].key;
            known = true;
            break;
        }
    }
    if (!known && has_prefix_nocase(kb, klen, NODE_LABEL_PREFIX)) {
        c.key = CONSTRAINT_KEY_NODE_LABEL;
        label = kb + strlen(NODE_LABEL_PREFIX);
        known = true;
    } else if (!known && has_prefix_nocase(kb, klen, ENGINE_LABEL_PREFIX)) {
        c.key = CONSTRAINT_KEY_ENGINE_LABEL;
        label = kb + strlen(ENGINE_LABEL_PREFIX);
        known = true;
    }
    char frag[72];
    if (!known) {
        if (klen == 0)
            parse_error(errbuf, errlen, expr, "missing key before the operator");
        else
            parse_error(errbuf, errlen, expr,
                        "unknown key \"%s\" (expected node.id, node.hostname, node.role, "
                        "node.platform.os, node.platform.arch, node.labels.<name> or "
                        "engine.labels.<name>)",
                        shown(frag, sizeof frag, kb, klen));
        return -EINVAL;
    }
    if (label) {
        label_len = (size_t)(ke - label);
        if (label_len == 0) {
            parse_error(errbuf, errlen, expr, "missing label name after \"%s\"",
                        shown(frag, sizeof frag, kb, (size_t)(label - kb)));
            return -EINVAL;
        }
        if (label_len > CONSTRAINT_MAX_LEN) {
            parse_error(errbuf, errlen, expr, "label name longer than %d bytes",
                        CONSTRAINT_MAX_LEN);
            return -EINVAL;
        }
        for (size_t i = 0; i < label_len; i++) {
            if (!is_label_name_char(label[i])) {
                parse_error(errbuf, errlen, expr,
                            "label name \"%s\" is invalid (allowed: letters, digits, _ . -)",
                            shown(frag, sizeof frag, label, label_len));
                return -EINVAL;
            }
        }
    }
    if (vlen == 0) {
        parse_error(errbuf, errlen, expr, "missing value after the operator");
        return -EINVAL;
    }
    if (vlen > CONSTRAINT_MAX_LEN) {
        parse_error(errbuf, errlen, expr, "value longer than %d bytes", CONSTRAINT_MAX_LEN);
        return -EINVAL;
    }
    for (size_t i = 0; i < vlen; i++) {
        if (!is_value_char(vb[i])) {
            parse_error(errbuf, errlen, expr,
                        "value \"%s\" is invalid (allowed: letters, digits, spaces and "
                        ":-_.*()?+[]\\^$|/)",
                        shown(frag, sizeof frag, vb, vlen));
            return -EINVAL;
        }
    }

    c.value = strndup(vb, vlen);
    c.label = label ? strndup(label, label_len) : NULL;
    if (!c.value || (label && !c.label)) {
        constraint_clear(&c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

void constraint_clear(constraint_t *c) {
    if (!c)
        return;
    free(c->label);
    free(c->value);
    c->label = c->value = NULL;
}

int constraint_list_parse(char *const *exprs, size_t n, constraint_list_t **ret, char *errbuf,
                          size_t errlen) {
    constraint_list_t *list = calloc(1, sizeof *list);
    if (!list)
        return -ENOMEM;
    if (n > 0) {
        list->items = calloc(n, sizeof *list->items);
        if (!list->items) {
            free(list);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        int r = constraint_parse(exprs[i], &list->items[i], errbuf, errlen);
        if (r < 0) {
            constraint_list_destroy(&list);
            return r;
        }
        list->count++;
    }
    *ret = list;
    return 0;
}

void constraint_list_destroy(constraint_list_t **self_p) {
    if (!self_p || !*self_p)
        return;
    constraint_list_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        constraint_clear(&self->items[i]);
    free(self->items);
    free(self);
    *self_p = NULL;
}

static const char *label_lookup(Shoal__Label *const *labels, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (labels[i] && labels[i]->key && strcmp(labels[i]->key, name) == 0)
            return labels[i]->value ? labels[i]->value : "";
    return "";
}

static const char *or_empty(const char *s) {
    return s ? s : "";
}

const char *constraint_normal_arch(const char *arch) {
    if (!arch)
        return "";
    if (strcmp(arch, "x86_64") == 0 || strcmp(arch, "x86-64") == 0)
        return "amd64";
    if (strcmp(arch, "aarch64") == 0)
        return "arm64";
    return arch;
}

const char *constraint_node_value(const Shoal__Node *node, enum constraint_key key,
                                  const char *label) {
    const Shoal__NodeDescription *desc = node ? node->description : NULL;
    switch (key) {
    case CONSTRAINT_KEY_NODE_ID:
        return node && node->meta ? or_empty(node->meta->id) : "";
    case CONSTRAINT_KEY_HOSTNAME:
        return desc ? or_empty(desc->hostname) : "";
    case CONSTRAINT_KEY_ROLE:
        if (!node)
            return "";
        return node->role == SHOAL__NODE_SPEC__ROLE__MANAGER ? "manager" : "worker";
    case CONSTRAINT_KEY_PLATFORM_OS:
        return desc && desc->platform ? or_empty(desc->platform->os) : "";
    case CONSTRAINT_KEY_PLATFORM_ARCH:
        return desc && desc->platform ? or_empty(desc->platform->architecture) : "";
    case CONSTRAINT_KEY_NODE_LABEL:
        if (label && node && node->spec && node->spec->annotations)
            return label_lookup(node->spec->annotations->labels, node->spec->annotations->n_labels,
                                label);
        return "";
    case CONSTRAINT_KEY_ENGINE_LABEL:
        if (label && desc && desc->engine)
            return label_lookup(desc->engine->labels, desc->engine->n_labels, label);
        return "";
    }
    return "";
}

bool constraint_match(const constraint_t *c, const Shoal__Node *node) {
    const char *have = constraint_node_value(node, c->key, c->label);
    bool equal;
    if (c->key == CONSTRAINT_KEY_NODE_LABEL || c->key == CONSTRAINT_KEY_ENGINE_LABEL)
        equal = strcmp(have, c->value) == 0;
    else if (c->key == CONSTRAINT_KEY_PLATFORM_ARCH)
        equal = strcasecmp(have, c->value) == 0 ||
                strcasecmp(constraint_normal_arch(have), constraint_normal_arch(c->value)) == 0;
    else
        equal = strcasecmp(have, c->value) == 0;
    return c->op == CONSTRAINT_OP_EQ ? equal : !equal;
}

bool constraint_list_match(const constraint_list_t *list, const Shoal__Node *node) {
    if (!list)
        return true;
    for (size_t i = 0; i < list->count; i++)
        if (!constraint_match(&list->items[i], node))
            return false;
    return true;
}

int constraint_key_parse(const char *text, enum constraint_key *ret_key, const char **ret_label) {
    if (!text)
        return -EINVAL;
    size_t len = strlen(text);
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++) {
        if (strcasecmp(text, fixed_keys[i].name) == 0) {
            *ret_key = fixed_keys[i].key;
            *ret_label = NULL;
            return 0;
        }
    }
    const char *label = NULL;
    enum constraint_key key;
    if (has_prefix_nocase(text, len, NODE_LABEL_PREFIX)) {
        key = CONSTRAINT_KEY_NODE_LABEL;
        label = text + strlen(NODE_LABEL_PREFIX);
    } else if (has_prefix_nocase(text, len, ENGINE_LABEL_PREFIX)) {
        key = CONSTRAINT_KEY_ENGINE_LABEL;
        label = text + strlen(ENGINE_LABEL_PREFIX);
    } else {
        return -EINVAL;
    }
    if (!*label || strlen(label) > CONSTRAINT_MAX_LEN)
        return -EINVAL;
    for (const char *p = label; *p; p++)
        if (!is_label_name_char(*p))
            return -EINVAL;
    *ret_key = key;
    *ret_label = label;
    return 0;
}

char *constraint_format(const constraint_t *c, char *buf, size_t len) {
    const char *op = c->op == CONSTRAINT_OP_EQ ? "==" : "!=";
    switch (c->key) {
    case CONSTRAINT_KEY_NODE_LABEL:
        snprintf(buf, len, NODE_LABEL_PREFIX "%s%s%s", c->label, op, c->value);
        break;
    case CONSTRAINT_KEY_ENGINE_LABEL:
        snprintf(buf, len, ENGINE_LABEL_PREFIX "%s%s%s", c->label, op, c->value);
        break;
    default:
        for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++)
            if (fixed_keys[i].key == c->key)
                snprintf(buf, len, "%s%s%s", fixed_keys[i].name, op, c->value);
        break;
    }
    return buf;
}

bool constraint_match_all(char *const *exprs, size_t n, const Shoal__Node *node) {
    constraint_list_t *list = NULL;
    if (constraint_list_parse(exprs, n, &list, NULL, 0) < 0)
        return false;
    bool ok = constraint_list_match(list, node);
    constraint_list_destroy(&list);
    return ok;
}
