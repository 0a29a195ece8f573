/* Fuzz target: the agent's parsers of Docker Engine replies (services/agent/docker.c) — one
 * /events line (start, die, oom, destroy, health_status), a /containers/{id}/json body, a
 * /containers/json list and an /info body — on arbitrary bytes. Every input goes through all four;
 * what they return must be well-formed. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/agent/docker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;

    docker_event_t ev;
    int r = docker_parse_event(text, size, &ev);
    if (r == 0) {
        assert(ev.kind >= DOCKER_EVENT_START && ev.kind <= DOCKER_EVENT_UNHEALTHY);
        assert(ev.task_id[0] && memchr(ev.task_id, 0, sizeof ev.task_id));
        assert(ev.container_id[0] && memchr(ev.container_id, 0, sizeof ev.container_id));
        assert(ev.kind == DOCKER_EVENT_DIE ? ev.exit_code >= -1 && ev.exit_code <= 255
                                           : ev.exit_code == -1);
    } else {
        assert(r == -EINVAL || r == -ENOENT);
    }

    docker_container_t c;
    r = docker_parse_inspect(text, size, "shoal", &c);
    if (r == 0) {
        assert(c.id[0] && memchr(c.id, 0, sizeof c.id));
        assert(memchr(c.name, 0, sizeof c.name) && memchr(c.status, 0, sizeof c.status));
        assert(memchr(c.ip, 0, sizeof c.ip) && memchr(c.task_id, 0, sizeof c.task_id));
        assert(c.pid >= 0);
        assert(memchr(c.health, 0, sizeof c.health));
    } else {
        assert(r == -EINVAL);
    }

    docker_container_t *list = NULL;
    size_t n = 0;
    r = docker_parse_list(text, size, &list, &n);
    if (r == 0) {
        for (size_t i = 0; i < n; i++) {
            assert(list[i].id[0]);
            assert(list[i].running == (strcmp(list[i].status, "running") == 0));
        }
    }
    free(list);

    docker_info_t info;
    r = docker_parse_info(text, size, &info);
    if (r == 0) {
        assert(info.ncpu >= 0 && info.mem_total >= 0);
        for (size_t i = 0; i < info.nlabels; i++)
            assert(info.labels[i]);
        docker_info_clear(&info);
    }
    return 0;
}
