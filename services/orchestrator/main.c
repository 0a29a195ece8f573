/* shoal-orchestrator — the user control API and the reconcilers (DESIGN §1, §5).
 *
 * main() only wires modules: daemon_setup() (flags, bus server, store client, loop), the
 * orchestrator core (manager.c: leader election, cache, reconcile loop), the API methods
 * (api.c), then daemon_run() until SIGTERM. Any number may run; one leads via the store lease
 * /leases/orchestrator, and every instance serves the API. */
#include <stdio.h>

#include "api.h"
#include "daemon.h"
#include "manager.h"

int main(int argc, char **argv) {
    daemon_t d;
    if (daemon_setup(&d, "orchestrator", argc, argv, NULL) < 0)
        return 1;
    orch_t *o = orch_new(&d);
    if (!o) {
        fprintf(stderr,
                "shoal-orchestrator: cannot start the orchestrator core (keys or memory)\n");
        return 1;
    }
    if (api_register(o) < 0 || orch_start(o) < 0) {
        fprintf(stderr, "shoal-orchestrator: cannot register the API methods\n");
        orch_destroy(&o);
        return 1;
    }
    int rc = daemon_run(&d);
    orch_destroy(&o);
    return rc;
}
