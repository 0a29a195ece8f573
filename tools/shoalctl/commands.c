/* commands — shoalctl's request/reply verbs: list, status, introspect, call.
 *
 * `call` is generic on purpose: it asks the daemon (bus.Describe) for the method's input and
 * output type names, finds their descriptors with pbjson_find_descriptor, and converts JSON to
 * the input and the reply to JSON. So any method of any daemon, including one added tomorrow,
 * can be called from a shell without new code here. The only local knowledge is the set of
 * messages compiled into lib/pbjson.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "pbjson.h"
#include "table.h"

/* ---- list --------------------------------------------------------------------------------- */

static int entry_cmp(const void *a, const void *b) {
    const Shoal__Bus__RegistryEntry *x = *(Shoal__Bus__RegistryEntry *const *)a;
    const Shoal__Bus__RegistryEntry *y = *(Shoal__Bus__RegistryEntry *const *)b;
    int d = strcmp(x->kind, y->kind);
    return d ? d : strcmp(x->instance, y->instance);
}

int cmd_list(ctl_t *ctl, int argc, char **argv) {
    Shoal__Store__RangeResponse *resp = NULL;
    if (ctl_store_list(ctl, "/bus/", &resp) < 0)
        return ctl_fail("list: cannot read the registry: %s", ctl_store_error(ctl));
    Shoal__Bus__RegistryEntry **entries = calloc(resp->n_kvs ? resp->n_kvs : 1, sizeof *entries);
    if (!entries) {
        shoal__store__range_response__free_unpacked(resp, NULL);
        return ctl_fail("out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < resp->n_kvs; i++) {
        Shoal__Bus__RegistryEntry *e = shoal__bus__registry_entry__unpack(
            NULL, resp->kvs[i]->value.len, resp->kvs[i]->value.data);
        if (e)
            entries[n++] = e;
        else
            fprintf(stderr, "shoalctl: list: %s does not hold a registry entry, skipped\n",
                    resp->kvs[i]->key);
    }
    shoal__store__range_response__free_unpacked(resp, NULL);
    qsort(entries, n, sizeof *entries, entry_cmp);

    int rc = 0;
    if (ctl->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
            if (json_array_append_new(
                    arr, pbjson_encode(&entries[i]->base,
                                       ctl->emit_defaults ? PBJSON_EMIT_DEFAULTS : 0)) < 0) {
                json_decref(arr);
                arr = NULL;
            }
        rc = ctl_print_json(arr);
    } else {
        table_t *t = table_new(6, "KIND", "INSTANCE", "PID", "NODE", "RPC-ENDPOINT", "AGE");
        if (!t)
            rc = ctl_fail("out of memory");
        int64_t now = clock_wall_ms();
        for (size_t i = 0; t && i < n; i++) {
            const Shoal__Bus__RegistryEntry *e = entries[i];
            char age[32] = "-";
            if (e->started_ms > 0)
                ctl_format_duration(now - e->started_ms, age, sizeof age);
            table_row(t);
            table_cell(t, "%s", e->kind);
            table_cell(t, "%s", e->instance);
            table_cell(t, "%d", e->pid);
            table_cell(t, "%s", *e->node ? e->node : "-");
            table_cell(t, "%s", e->rpc_endpoint);
            table_cell(t, "%s", age);
        }
        if (t)
            table_print(t, stdout);
        table_destroy(&t);
    }
    for (size_t i = 0; i < n; i++)
        shoal__bus__registry_entry__free_unpacked(entries[i], NULL);
    free(entries);
    return rc;
}

/* ---- status ------------------------------------------------------------------------------- */

static int call_std(ctl_t *ctl, bus_client_t *c, const char *method,
                    const ProtobufCMessageDescriptor *out, ProtobufCMessage **ret) {
    Shoal__Bus__Empty empty = SHOAL__BUS__EMPTY__INIT;
    int rc = bus_client_call(c, method, &empty.base, out, ctl->timeout_ms, ret);
    return rc == BUS_OK ? 0 : ctl_call_failed(c, method, rc);
}

int cmd_status(ctl_t *ctl, int argc, char **argv) {
    ctl_daemon_t d;
    bus_client_t *c = ctl_connect(ctl, argv[0], &d);
    if (!c)
        return 1;
    Shoal__Bus__PingResponse *ping = NULL;
    Shoal__Bus__HealthResponse *health = NULL;
    Shoal__Bus__StatsResponse *stats = NULL;
    int rc = call_std(ctl, c, "bus.Ping", &shoal__bus__ping_response__descriptor,
                      (ProtobufCMessage **)&ping);
    if (rc == 0)
        rc = call_std(ctl, c, "bus.Health", &shoal__bus__health_response__descriptor,
                      (ProtobufCMessage **)&health);
    if (rc == 0)
        rc = call_std(ctl, c, "bus.Stats", &shoal__bus__stats_response__descriptor,
                      (ProtobufCMessage **)&stats);
    if (rc == 0 && ctl->json) {
        /* Stats as one object (name -> value): what a script wants to index. */
        json_t *j = json_object(), *s = json_object();
        for (size_t i = 0; j && s && i < stats->n_stats; i++)
            json_object_set_new(s, stats->stats[i]->name, json_integer(stats->stats[i]->value));
        json_object_set_new(j, "endpoint", json_string(d.rpc));
        json_object_set_new(j, "ping", pbjson_encode(&ping->base, PBJSON_EMIT_DEFAULTS));
        json_object_set_new(j, "health", pbjson_encode(&health->base, PBJSON_EMIT_DEFAULTS));
        json_object_set_new(j, "stats", s);
        rc = ctl_print_json(j);
    } else if (rc == 0) {
        char up[32];
        ctl_format_duration((int64_t)ping->uptime_ms, up, sizeof up);
        printf("%s/%s   pid %d   up %s   %s\n", ping->kind, ping->instance, ping->pid, up, d.rpc);
        printf("health: %s%s%s\n", health->healthy ? "healthy" : "UNHEALTHY",
               *health->status ? ", " : "", health->status);
        if (health->n_checks) {
            table_t *t = table_new(3, "CHECK", "OK", "MESSAGE");
            for (size_t i = 0; t && i < health->n_checks; i++) {
                table_row(t);
                table_cell(t, "%s", health->checks[i]->name);
                table_cell(t, "%s", health->checks[i]->ok ? "yes" : "NO");
                table_cell(t, "%s", health->checks[i]->message);
            }
            putchar('\n');
            if (t)
                table_print(t, stdout);
            table_destroy(&t);
        }
        table_t *t = table_new(2, "STAT", "VALUE");
        for (size_t i = 0; t && i < stats->n_stats; i++) {
            table_row(t);
            table_cell(t, "%s", stats->stats[i]->name);
            table_cell(t, "%lld", (long long)stats->stats[i]->value);
        }
        putchar('\n');
        if (t)
            table_print(t, stdout);
        table_destroy(&t);
    }
    shoal__bus__ping_response__free_unpacked(ping, NULL);
    shoal__bus__health_response__free_unpacked(health, NULL);
    shoal__bus__stats_response__free_unpacked(stats, NULL);
    bus_client_destroy(&c);
    return rc;
}

/* ---- introspect --------------------------------------------------------------------------- */

static Shoal__Bus__DescribeResponse *describe(ctl_t *ctl, bus_client_t *c) {
    Shoal__Bus__DescribeResponse *desc = NULL;
    if (call_std(ctl, c, "bus.Describe", &shoal__bus__describe_response__descriptor,
                 (ProtobufCMessage **)&desc) != 0)
        return NULL;
    return desc;
}

static int method_cmp(const void *a, const void *b) {
    return strcmp((*(Shoal__Bus__MethodInfo *const *)a)->name,
                  (*(Shoal__Bus__MethodInfo *const *)b)->name);
}

int cmd_introspect(ctl_t *ctl, int argc, char **argv) {
    bus_client_t *c = ctl_connect(ctl, argv[0], NULL);
    if (!c)
        return 1;
    Shoal__Bus__DescribeResponse *desc = describe(ctl, c);
    bus_client_destroy(&c);
    if (!desc)
        return 1;
    qsort(desc->methods, desc->n_methods, sizeof *desc->methods, method_cmp);
    int rc = 0;
    if (ctl->json) {
        rc = ctl_print_json(pbjson_encode(&desc->base, PBJSON_EMIT_DEFAULTS));
    } else {
        table_t *t = table_new(4, "METHOD", "INPUT-TYPE", "OUTPUT-TYPE", "ROLES");
        for (size_t i = 0; t && i < desc->n_methods; i++) {
            const Shoal__Bus__MethodInfo *m = desc->methods[i];
            char roles[128] = "";
            size_t o = 0;
            for (size_t r = 0; r < m->n_roles && o < sizeof roles; r++) {
                int k = snprintf(roles + o, sizeof roles - o, "%s%s", r ? "," : "", m->roles[r]);
                o += k > 0 ? (size_t)k : 0;
            }
            table_row(t);
            table_cell(t, "%s", m->name);
            table_cell(t, "%s", m->input_type);
            table_cell(t, "%s", m->output_type);
            table_cell(t, "%s", roles);
        }
        if (t)
            table_print(t, stdout);
        else
            rc = ctl_fail("out of memory");
        table_destroy(&t);
    }
    shoal__bus__describe_response__free_unpacked(desc, NULL);
    return rc;
}

/* ---- call --------------------------------------------------------------------------------- */

/* "-" reads the JSON input from stdin. */
static char *read_all(FILE *in) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, in);
        len += n;
        if (len + 1 < cap)
            break;
        cap *= 2;
        char *grown = realloc(buf, cap);
        if (!grown) {
            free(buf);
            return NULL;
        }
        buf = grown;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* The method named `name` ("store.Put"; a bare "Put" means "<kind>.Put"). */
static const Shoal__Bus__MethodInfo *find_method(const Shoal__Bus__DescribeResponse *desc,
                                                 const char *name) {
    for (size_t i = 0; i < desc->n_methods; i++)
        if (!strcmp(desc->methods[i]->name, name))
            return desc->methods[i];
    if (strchr(name, '.'))
        return NULL;
    char full[256];
    snprintf(full, sizeof full, "%s.%s", desc->kind, name);
    for (size_t i = 0; i < desc->n_methods; i++)
        if (!strcmp(desc->methods[i]->name, full))
            return desc->methods[i];
    return NULL;
}

int cmd_call(ctl_t *ctl, int argc, char **argv) {
    const char *spec = argv[0], *method_name = argv[1];
    const char *input_text = argc > 2 ? argv[2] : "{}";
    char *stdin_text = NULL;
    if (!strcmp(input_text, "-")) {
        stdin_text = read_all(stdin);
        if (!stdin_text)
            return ctl_fail("%s: cannot read the input from stdin", method_name);
        input_text = stdin_text;
    }
    bus_client_t *c = ctl_connect(ctl, spec, NULL);
    Shoal__Bus__DescribeResponse *desc = c ? describe(ctl, c) : NULL;
    ProtobufCMessage *input = NULL, *output = NULL;
    int rc = 1;
    if (!desc)
        goto out;
    const Shoal__Bus__MethodInfo *m = find_method(desc, method_name);
    if (!m) {
        ctl_fail("%s: no such method on %s (see `shoalctl introspect %s`)", method_name, spec,
                 spec);
        goto out;
    }
    const ProtobufCMessageDescriptor *in_desc = pbjson_find_descriptor(m->input_type);
    const ProtobufCMessageDescriptor *out_desc = pbjson_find_descriptor(m->output_type);
    if (!in_desc || !out_desc) {
        ctl_fail("%s: message type %s is unknown to this shoalctl (built from older protos?)",
                 m->name, in_desc ? m->output_type : m->input_type);
        goto out;
    }
    char err[512];
    if (pbjson_loads(in_desc, input_text, &input, err, sizeof err) < 0) {
        ctl_fail("%s: bad input (%s): %s", m->name, in_desc->name, err);
        goto out;
    }
    int r = bus_client_call(c, m->name, input, out_desc, ctl->timeout_ms, &output);
    if (r != BUS_OK) {
        ctl_call_failed(c, m->name, r);
        goto out;
    }
    rc = ctl_print_json(pbjson_encode(output, ctl->emit_defaults ? PBJSON_EMIT_DEFAULTS : 0));
out:
    protobuf_c_message_free_unpacked(input, NULL);
    protobuf_c_message_free_unpacked(output, NULL);
    if (desc)
        shoal__bus__describe_response__free_unpacked(desc, NULL);
    bus_client_destroy(&c);
    free(stdin_text);
    return rc;
}
