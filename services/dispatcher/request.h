/* request — validation of every dispatcher request decoded from the network, before any of it
 * reaches the heartbeat table, the assignment sets or the status queue. See request.c. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "dispatcher.pb-c.h"

#define REQUEST_MAX_UPDATES 1000 /* status updates in one UpdateTaskStatus */

/* An id as it may appear in a store key: 1..64 characters of [A-Za-z0-9_.-]. */
bool request_id_valid(const char *id);

/* Each returns 0, or -EINVAL with one line saying what is wrong in errbuf. */
int request_check_register(const Shoal__Dispatcher__RegisterRequest *r, char *errbuf,
                           size_t errlen);
int request_check_heartbeat(const Shoal__Dispatcher__HeartbeatRequest *r, char *errbuf,
                            size_t errlen);
int request_check_assignments(const Shoal__Dispatcher__AssignmentsRequest *r, char *errbuf,
                              size_t errlen);
int request_check_update_task_status(const Shoal__Dispatcher__UpdateTaskStatusRequest *r,
                                     char *errbuf, size_t errlen);
