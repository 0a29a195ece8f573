/* validate — checks a user's ServiceSpec / NodeSpec before anything is written, naming every bad
 * field in one message:
 *   invalid service spec: annotations.name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}
 *   (got "-web"); task.container.image: required
 * Name uniqueness needs the current services and is checked by the API (api.c). */
#pragma once
#include <stddef.h>

#include "objects.pb-c.h"

#define VALIDATE_MAX_REPLICAS 10000
#define VALIDATE_NAME_MAX     63

/* 0 when the spec is acceptable; -EINVAL with "invalid service spec: <field>: <problem>; ..."
 * in err (truncated to errlen, always NUL-terminated). */
int validate_service_spec(const Shoal__ServiceSpec *spec, char *err, size_t errlen);

/* Same for a NodeSpec given to NodeUpdate ("invalid node spec: ..."). */
int validate_node_spec(const Shoal__NodeSpec *spec, char *err, size_t errlen);

/* Whether `name` is a valid service name: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}. */
int validate_name(const char *name);
