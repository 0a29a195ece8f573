/* api — shoal-orchestrator's bus methods (proto/orchestrator.proto): orchestrator.Service*,
 * orchestrator.TaskList and orchestrator.Node*, plus bus.Health and bus.Stats content. */
#pragma once
#include "manager.h"

/* Adds the methods, health and stats callbacks to the daemon's bus server. */
int api_register(orch_t *o);

/* Ingress ports given as 0 are picked from this range (DESIGN §7). */
#define API_PORT_RANGE_MIN 30000
#define API_PORT_RANGE_MAX 32767
