/* session — the agent's side of the dispatcher protocol (proto/dispatcher.proto) that runs off
 * the main loop: the assignments long-poller, an actor with its own connection so that a
 * 5-second long-poll never delays a heartbeat or a status report on the main connection.
 *
 * Pipe protocol
 *   main → poller  "SESSION" node_id session_id   start (or restart) polling for this session;
 *                                                 an empty session_id pauses
 *   poller → main  "ASSIGN" <frame: packed shoal.dispatcher.AssignmentsResponse>
 *                                                 a new assignment set (version changed)
 *                  "LOST" session_id message      the dispatcher does not know the session
 *                                                 (FAILED_PRECONDITION / NOT_FOUND): re-register;
 *                                                 the poller pauses until the next SESSION
 * The known version restarts at 0 with every SESSION, so a new session always gets the set. */
#pragma once
#include <czmq.h>

#define SESSION_POLL_TIMEOUT_MS 5000

/* `identity` is duplicated. endpoint/server_key: the dispatcher's. NULL on failure. */
zactor_t *assignments_poller_new(zcert_t *identity, const char *endpoint, const char *server_key,
                                 unsigned poll_timeout_ms);
/* Sends "SESSION". */
int assignments_poller_set_session(zactor_t *poller, const char *node_id, const char *session_id);
