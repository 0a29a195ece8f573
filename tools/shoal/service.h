/* service — what `service create` and `service update` share: the flags that edit a ServiceSpec
 * and the one function that applies them (service_spec.c). Create applies them to a fresh spec
 * with the CLI's defaults, update to the spec read from the orchestrator. */
#pragma once
#include "shoal.h"

/* Choice lists, in the order of the proto enums they map to (index == enum value). */
#define CHOICES_RESTART        "any|none|on-failure"
#define CHOICES_PULL           "missing|always|never"
#define CHOICES_FAILURE_ACTION "pause|continue|rollback"
#define CHOICES_ORDER          "stop-first|start-first"
#define CHOICES_ENDPOINT_MODE  "vip|dnsrr"

typedef struct spec_flags {
    const char *image;
    strv_t args;           /* create: CMD ARG... after IMAGE */
    const char *args_line; /* update --args "cmd a b" */
    bool args_given;
    const char *entrypoint; /* "cmd a b"; "" clears */
    bool entrypoint_given;
    strv_t env_add, env_rm;
    strv_t label_add, label_rm; /* service labels */
    strv_t container_label_add, container_label_rm;
    strv_t constraint_add, constraint_rm;
    strv_t placement_pref_add, placement_pref_rm;
    strv_t publish_add, publish_rm;
    strv_t mount_add, mount_rm;
    uint64_t replicas;
    bool replicas_given;
    uint64_t max_replicas;
    bool max_replicas_given;
    int restart_condition;
    bool restart_condition_given;
    int64_t restart_delay;
    bool restart_delay_given;
    uint64_t restart_max_attempts;
    bool restart_max_attempts_given;
    int64_t restart_window;
    bool restart_window_given;
    int64_t reserve_memory, reserve_cpu, limit_memory, limit_cpu;
    bool reserve_memory_given, reserve_cpu_given, limit_memory_given, limit_cpu_given;
    bool init;
    bool init_given;
    bool tty;
    bool tty_given;
    int64_t stop_grace;
    bool stop_grace_given;
    const char *stop_signal;
    bool stop_signal_given;
    uint64_t update_parallelism;
    bool update_parallelism_given;
    int64_t update_delay;
    bool update_delay_given;
    int update_failure_action;
    bool update_failure_action_given;
    int update_order;
    bool update_order_given;
    int64_t update_monitor;
    bool update_monitor_given;
    uint64_t rollback_parallelism;
    bool rollback_parallelism_given;
    int pull;
    bool pull_given;
    const char *workdir, *user, *hostname;
    bool workdir_given, user_given, hostname_given;
    const char *health_cmd;
    bool health_cmd_given;
    int64_t health_interval, health_timeout, health_start_period;
    bool health_interval_given, health_timeout_given, health_start_period_given;
    uint64_t health_retries;
    bool health_retries_given;
    bool no_healthcheck;
    int endpoint_mode;
    bool endpoint_mode_given;
    uint64_t history_limit;
    bool history_limit_given;
} spec_flags_t;

/* Flags with the same meaning in create and update (a fragment of a cli_flag_t initialiser). */
#define SPEC_COMMON_FLAGS(o)                                                                         \
    {"replicas", 0, FLAG_UINT, &(o).replicas, &(o).replicas_given, NULL, "N", "Number of tasks"},    \
        {"replicas-max-per-node",                                                                    \
         0,                                                                                          \
         FLAG_UINT,                                                                                  \
         &(o).max_replicas,                                                                          \
         &(o).max_replicas_given,                                                                    \
         NULL,                                                                                       \
         "N",                                                                                        \
         "Maximum number of tasks per node (0 = unlimited)"},                                        \
        {"workdir",          'w',  FLAG_STRING, &(o).workdir,                                        \
         &(o).workdir_given, NULL, "DIR",       "Working directory inside the container"},           \
        {"user", 'u', FLAG_STRING, &(o).user, &(o).user_given, NULL, "USER", "Username or UID"},     \
        {"hostname",          0,    FLAG_STRING, &(o).hostname,                                      \
         &(o).hostname_given, NULL, "NAME",      "Container hostname"},                              \
        {"entrypoint",                                                                               \
         0,                                                                                          \
         FLAG_STRING,                                                                                \
         &(o).entrypoint,                                                                            \
         &(o).entrypoint_given,                                                                      \
         NULL,                                                                                       \
         "CMD",                                                                                      \
         "Overwrite the image's entrypoint (\"\" restores it)"},                                     \
        {"init",                                                                                     \
         0,                                                                                          \
         FLAG_BOOL,                                                                                  \
         &(o).init,                                                                                  \
         &(o).init_given,                                                                            \
         NULL,                                                                                       \
         NULL,                                                                                       \
         "Run an init inside the container that forwards signals and reaps processes"},              \
        {"tty", 't', FLAG_BOOL, &(o).tty, &(o).tty_given, NULL, NULL, "Allocate a pseudo-TTY"},      \
        {"restart-condition",                                                                        \
         0,                                                                                          \
         FLAG_CHOICE,                                                                                \
         &(o).restart_condition,                                                                     \
         &(o).restart_condition_given,                                                               \
         CHOICES_RESTART,                                                                            \
         NULL,                                                                                       \
         "Restart when a task ends (default any)"},                                                  \
        {"restart-delay",          0,    FLAG_DURATION, &(o).restart_delay,                          \
         &(o).restart_delay_given, NULL, "DURATION",    "Delay between restart attempts"},           \
        {"restart-max-attempts",                                                                     \
         0,                                                                                          \
         FLAG_UINT,                                                                                  \
         &(o).restart_max_attempts,                                                                  \
         &(o).restart_max_attempts_given,                                                            \
         NULL,                                                                                       \
         "N",                                                                                        \
         "Maximum number of restarts (0 = unlimited)"},                                              \
        {"restart-window",                                                                           \
         0,                                                                                          \
         FLAG_DURATION,                                                                              \
         &(o).restart_window,                                                                        \
         &(o).restart_window_given,                                                                  \
         NULL,                                                                                       \
         "DURATION",                                                                                 \
         "Window used to evaluate the restart policy"},                                              \
        {"reserve-memory",          0,    FLAG_BYTES, &(o).reserve_memory,                           \
         &(o).reserve_memory_given, NULL, "BYTES",    "Reserve memory (64M, 1G)"},                   \
        {"reserve-cpu",          0,    FLAG_CPUS, &(o).reserve_cpu,                                  \
         &(o).reserve_cpu_given, NULL, "CPUS",    "Reserve CPUs (0.5)"},                             \
        {"limit-memory",          0,    FLAG_BYTES, &(o).limit_memory,                               \
         &(o).limit_memory_given, NULL, "BYTES",    "Limit memory (64M, 1G)"},                       \
        {"limit-cpu",          0,    FLAG_CPUS, &(o).limit_cpu,                                      \
         &(o).limit_cpu_given, NULL, "CPUS",    "Limit CPUs (0.5)"},                                 \
        {"stop-grace-period",                                                                        \
         0,                                                                                          \
         FLAG_DURATION,                                                                              \
         &(o).stop_grace,                                                                            \
         &(o).stop_grace_given,                                                                      \
         NULL,                                                                                       \
         "DURATION",                                                                                 \
         "Time to wait before force killing a container (default 10s)"},                             \
        {"stop-signal",          0,    FLAG_STRING, &(o).stop_signal,                                \
         &(o).stop_signal_given, NULL, "SIGNAL",    "Signal to stop the container"},                 \
        {"update-parallelism",                                                                       \
         0,                                                                                          \
         FLAG_UINT,                                                                                  \
         &(o).update_parallelism,                                                                    \
         &(o).update_parallelism_given,                                                              \
         NULL,                                                                                       \
         "N",                                                                                        \
         "Tasks updated at once (0 = all; default 1)"},                                              \
        {"update-delay",          0,    FLAG_DURATION, &(o).update_delay,                            \
         &(o).update_delay_given, NULL, "DURATION",    "Delay between updates"},                     \
        {"update-failure-action",                                                                    \
         0,                                                                                          \
         FLAG_CHOICE,                                                                                \
         &(o).update_failure_action,                                                                 \
         &(o).update_failure_action_given,                                                           \
         CHOICES_FAILURE_ACTION,                                                                     \
         NULL,                                                                                       \
         "Action on update failure (default pause)"},                                                \
        {"update-order",                                                                             \
         0,                                                                                          \
         FLAG_CHOICE,                                                                                \
         &(o).update_order,                                                                          \
         &(o).update_order_given,                                                                    \
         CHOICES_ORDER,                                                                              \
         NULL,                                                                                       \
         "Update order (default stop-first)"},                                                       \
        {"update-monitor",                                                                           \
         0,                                                                                          \
         FLAG_DURATION,                                                                              \
         &(o).update_monitor,                                                                        \
         &(o).update_monitor_given,                                                                  \
         NULL,                                                                                       \
         "DURATION",                                                                                 \
         "Time to watch each updated task for failure"},                                             \
        {"rollback-parallelism",          0,    FLAG_UINT, &(o).rollback_parallelism,                \
         &(o).rollback_parallelism_given, NULL, "N",       "Tasks rolled back at once (default 1)"}, \
        {"pull",                                                                                     \
         0,                                                                                          \
         FLAG_CHOICE,                                                                                \
         &(o).pull,                                                                                  \
         &(o).pull_given,                                                                            \
         CHOICES_PULL,                                                                               \
         NULL,                                                                                       \
         "When to pull the image (default missing)"},                                                \
        {"health-cmd",                                                                               \
         0,                                                                                          \
         FLAG_STRING,                                                                                \
         &(o).health_cmd,                                                                            \
         &(o).health_cmd_given,                                                                      \
         NULL,                                                                                       \
         "CMD",                                                                                      \
         "Command to run to check health (run by /bin/sh -c)"},                                      \
        {"health-interval",          0,    FLAG_DURATION, &(o).health_interval,                      \
         &(o).health_interval_given, NULL, "DURATION",    "Time between health checks"},             \
        {"health-timeout",          0,    FLAG_DURATION, &(o).health_timeout,                        \
         &(o).health_timeout_given, NULL, "DURATION",    "Maximum time a health check may take"},    \
        {"health-start-period",          0,    FLAG_DURATION, &(o).health_start_period,              \
         &(o).health_start_period_given, NULL, "DURATION",    "Start period before failures count"}, \
        {"health-retries",                                                                           \
         0,                                                                                          \
         FLAG_UINT,                                                                                  \
         &(o).health_retries,                                                                        \
         &(o).health_retries_given,                                                                  \
         NULL,                                                                                       \
         "N",                                                                                        \
         "Consecutive failures needed to report unhealthy"},                                         \
        {"no-healthcheck",                                                                           \
         0,                                                                                          \
         FLAG_BOOL,                                                                                  \
         &(o).no_healthcheck,                                                                        \
         NULL,                                                                                       \
         NULL,                                                                                       \
         NULL,                                                                                       \
         "Disable any container-specified HEALTHCHECK"},                                             \
        {"endpoint-mode",                                                                            \
         0,                                                                                          \
         FLAG_CHOICE,                                                                                \
         &(o).endpoint_mode,                                                                         \
         &(o).endpoint_mode_given,                                                                   \
         CHOICES_ENDPOINT_MODE,                                                                      \
         NULL,                                                                                       \
         "Endpoint mode (default vip)"},                                                             \
    {                                                                                                \
        "task-history-limit", 0, FLAG_UINT, &(o).history_limit, &(o).history_limit_given, NULL,      \
            "N", "Tasks kept per slot (0 = cluster default)"                                         \
    }

/* A spec with the CLI's defaults: replicated, 1 replica, update/rollback parallelism 1,
 * restart condition any. */
Shoal__ServiceSpec *spec_new_default(arena_t *arena);
/* Applies every given flag to `spec`. 0, or -1 after printing "shoal: <command>: --flag: ...". */
int spec_apply(cli_t *cli, arena_t *arena, Shoal__ServiceSpec *spec, const spec_flags_t *f);

/* "web.1" for a replicated task, "web.<node id>" for a global one. */
const char *task_display_name(arena_t *arena, const Shoal__Task *t);
/* The service's name, or its id when it has none. */
const char *service_display_name(const Shoal__Service *s);
/* ServiceInspect; prints `service "x" not found` and the like. 0 or -1. */
int service_lookup(cli_t *cli, arena_t *arena, const char *ref, Shoal__Service **ret);
