/* Fuzz target: the sim agent's flag parsers (services/agent/sim.c) — --sim-labels,
 * --sim-label-spread, --sim-memory, --sim-cpus, --sim-failure-rate — on arbitrary text. Whatever
 * they accept must be within bounds; whatever they refuse must leave the options as they were. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/agent/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    sim_opts_t o;
    sim_opts_init(&o);
    char err[256];
    for (int round = 0; round < 20; round++) { /* past the tables' limits */
        int before = o.nlabels;
        int r = sim_parse_labels(&o, text, err, sizeof err);
        assert(r == 0 || r == -EINVAL);
        assert(r == 0 ? o.nlabels > before : o.nlabels == before);
        assert(o.nlabels <= SIM_LABELS_MAX);
        before = o.nspreads;
        r = sim_parse_spread(&o, text, err, sizeof err);
        assert(r == 0 || r == -EINVAL);
        assert(o.nspreads == before + (r == 0));
        assert(o.nspreads <= SIM_SPREADS_MAX);
    }
    for (int i = 0; i < o.nlabels; i++) {
        assert(o.labels[i].key[0] && memchr(o.labels[i].key, 0, SIM_LABEL_KEY_MAX));
        assert(memchr(o.labels[i].value, 0, SIM_LABEL_VALUE_MAX));
    }
    for (int i = 0; i < o.nspreads; i++)
        assert(o.spreads[i].nvalues >= 1 && o.spreads[i].nvalues <= SIM_SPREAD_VALUES_MAX);
    const char *keys[SIM_LABELS_MAX + SIM_SPREADS_MAX], *values[SIM_LABELS_MAX + SIM_SPREADS_MAX];
    size_t n = sim_node_labels(&o, (int)(size * 7919u % 100000u), keys, values,
                               SIM_LABELS_MAX + SIM_SPREADS_MAX);
    assert(n == (size_t)(o.nlabels + o.nspreads));
    for (size_t i = 0; i < n; i++) {
        assert(keys[i] && keys[i][0] && values[i]);
        if (i >= (size_t)o.nlabels)
            assert(values[i][0]); /* spread values are never empty */
    }

    int64_t v = -1;
    if (sim_parse_size(text, &v) == 0)
        assert(v > 0);
    if (sim_parse_cpus(text, &v) == 0)
        assert(v > 0);
    double p = -1;
    if (sim_parse_rate(text, &p) == 0)
        assert(p >= 0 && p <= 1);
    o.nodes = (int)(size % SIM_NODES_MAX) + 1;
    char name[SIM_NAME_MAX];
    sim_node_name(&o, o.nodes - 1, name, sizeof name);
    assert(name[0] && strlen(name) < sizeof name);
    free(text);
    return 0;
}
