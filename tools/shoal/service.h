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
    strv_t platform_add, platform_rm;
    strv_t publish_add, publish_rm;
    strv_t mount_add, mount_rm;
    /* replicated: replicas; replicated-job: total completions (as docker's --replicas) */
    uint64_t replicas;
    bool replicas_given;
    uint64_t max_concurrent; /* replicated-job only */
    bool max_concurrent_given;
    uint64_t max_replicas;
    bool max_replicas_given;
    int placement_strategy;
    bool placement_strategy_given;
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
    float update_max_failure_ratio;
    bool update_max_failure_ratio_given;
    uint64_t rollback_parallelism;
    bool rollback_parallelism_given;
    int64_t rollback_delay;
    bool rollback_delay_given;
    int rollback_failure_action; /* pause|continue only, as docker */
    bool rollback_failure_action_given;
    int rollback_order;
    bool rollback_order_given;
    int64_t rollback_monitor;
    bool rollback_monitor_given;
    float rollback_max_failure_ratio;
    bool rollback_max_failure_ratio_given;
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
    bool no_healthcheck_given;
    int endpoint_mode;
    bool endpoint_mode_given;
    uint64_t history_limit;
    bool history_limit_given;
} spec_flags_t;

#define CHOICES_ROLLBACK_FAILURE_ACTION "pause|continue"
#define CHOICES_PLACEMENT_STRATEGY      "spread|binpack|random"

/* One row of a flag table that writes spec_flags_t.<field> and sets <field>_given. */
#define SPEC_FLAG(o, name, short_name, kind, field, choices, metavar, help)                        \
    { name, short_name, kind, &(o).field, &(o).field##_given, choices, metavar, help }

/* Flags with the same meaning in create and update (a fragment of a cli_flag_t initialiser). */
// clang-format off
#define SPEC_COMMON_FLAGS(o)                                                                       \
    SPEC_FLAG(o, "replicas", 0, FLAG_UINT, replicas, NULL, "N",                                    \
              "Number of tasks (replicated-job: total completions)"),                              \
    SPEC_FLAG(o, "max-concurrent", 0, FLAG_UINT, max_concurrent, NULL, "N",                        \
              "Tasks of a replicated job run at once (default: --replicas)"),                      \
    SPEC_FLAG(o, "replicas-max-per-node", 0, FLAG_UINT, max_replicas, NULL, "N",                   \
              "Maximum number of tasks per node (0 = unlimited)"),                                 \
    SPEC_FLAG(o, "max-replicas", 0, FLAG_UINT, max_replicas, NULL, "N",                            \
              "Same as --replicas-max-per-node"),                                                  \
    SPEC_FLAG(o, "placement-strategy", 0, FLAG_CHOICE, placement_strategy,                         \
              CHOICES_PLACEMENT_STRATEGY, "STRATEGY",                                              \
              "How nodes are picked: spread, binpack or random (default spread)"),                 \
    SPEC_FLAG(o, "workdir", 'w', FLAG_STRING, workdir, NULL, "DIR",                                \
              "Working directory inside the container"),                                           \
    SPEC_FLAG(o, "user", 'u', FLAG_STRING, user, NULL, "USER", "Username or UID"),                 \
    SPEC_FLAG(o, "hostname", 0, FLAG_STRING, hostname, NULL, "NAME", "Container hostname"),        \
    SPEC_FLAG(o, "entrypoint", 0, FLAG_STRING, entrypoint, NULL, "CMD",                            \
              "Overwrite the image's entrypoint (\"\" restores it)"),                              \
    SPEC_FLAG(o, "init", 0, FLAG_BOOL, init, NULL, NULL,                                           \
              "Run an init inside the container that forwards signals and reaps processes"),       \
    SPEC_FLAG(o, "tty", 't', FLAG_BOOL, tty, NULL, NULL, "Allocate a pseudo-TTY"),                 \
    SPEC_FLAG(o, "restart-condition", 0, FLAG_CHOICE, restart_condition, CHOICES_RESTART, NULL,    \
              "Restart when a task ends (default any; jobs: on-failure)"),                         \
    SPEC_FLAG(o, "restart-delay", 0, FLAG_DURATION, restart_delay, NULL, "DURATION",               \
              "Delay between restart attempts"),                                                   \
    SPEC_FLAG(o, "restart-max-attempts", 0, FLAG_UINT, restart_max_attempts, NULL, "N",            \
              "Maximum number of restarts before giving up (0 = unlimited)"),                      \
    SPEC_FLAG(o, "restart-window", 0, FLAG_DURATION, restart_window, NULL, "DURATION",             \
              "Window used to evaluate the restart policy"),                                       \
    SPEC_FLAG(o, "reserve-memory", 0, FLAG_BYTES, reserve_memory, NULL, "BYTES",                   \
              "Reserve memory (64M, 1G)"),                                                         \
    SPEC_FLAG(o, "reserve-cpu", 0, FLAG_CPUS, reserve_cpu, NULL, "CPUS", "Reserve CPUs (0.5)"),    \
    SPEC_FLAG(o, "limit-memory", 0, FLAG_BYTES, limit_memory, NULL, "BYTES",                       \
              "Limit memory (64M, 1G)"),                                                           \
    SPEC_FLAG(o, "limit-cpu", 0, FLAG_CPUS, limit_cpu, NULL, "CPUS", "Limit CPUs (0.5)"),          \
    SPEC_FLAG(o, "stop-grace-period", 0, FLAG_DURATION, stop_grace, NULL, "DURATION",              \
              "Time to wait before force killing a container (default 10s)"),                      \
    SPEC_FLAG(o, "stop-signal", 0, FLAG_STRING, stop_signal, NULL, "SIGNAL",                       \
              "Signal to stop the container"),                                                     \
    SPEC_FLAG(o, "update-parallelism", 0, FLAG_UINT, update_parallelism, NULL, "N",                \
              "Tasks updated at once (0 = all; default 1)"),                                       \
    SPEC_FLAG(o, "update-delay", 0, FLAG_DURATION, update_delay, NULL, "DURATION",                 \
              "Delay between updates"),                                                            \
    SPEC_FLAG(o, "update-monitor", 0, FLAG_DURATION, update_monitor, NULL, "DURATION",             \
              "Time to watch each updated task for failure (default 5s)"),                         \
    SPEC_FLAG(o, "update-failure-action", 0, FLAG_CHOICE, update_failure_action,                   \
              CHOICES_FAILURE_ACTION, NULL, "Action on update failure (default pause)"),           \
    SPEC_FLAG(o, "update-max-failure-ratio", 0, FLAG_RATIO, update_max_failure_ratio, NULL,        \
              "RATIO", "Failure rate to tolerate during an update (0 to 1; default 0)"),           \
    SPEC_FLAG(o, "update-order", 0, FLAG_CHOICE, update_order, CHOICES_ORDER, NULL,                \
              "Update order (default stop-first)"),                                                \
    SPEC_FLAG(o, "rollback-parallelism", 0, FLAG_UINT, rollback_parallelism, NULL, "N",            \
              "Tasks rolled back at once (0 = all; default 1)"),                                   \
    SPEC_FLAG(o, "rollback-delay", 0, FLAG_DURATION, rollback_delay, NULL, "DURATION",             \
              "Delay between task rollbacks"),                                                     \
    SPEC_FLAG(o, "rollback-monitor", 0, FLAG_DURATION, rollback_monitor, NULL, "DURATION",         \
              "Time to watch each rolled back task for failure (default 5s)"),                     \
    SPEC_FLAG(o, "rollback-failure-action", 0, FLAG_CHOICE, rollback_failure_action,               \
              CHOICES_ROLLBACK_FAILURE_ACTION, NULL,                                               \
              "Action on rollback failure (default pause)"),                                       \
    SPEC_FLAG(o, "rollback-max-failure-ratio", 0, FLAG_RATIO, rollback_max_failure_ratio, NULL,    \
              "RATIO", "Failure rate to tolerate during a rollback (0 to 1; default 0)"),          \
    SPEC_FLAG(o, "rollback-order", 0, FLAG_CHOICE, rollback_order, CHOICES_ORDER, NULL,            \
              "Rollback order (default stop-first)"),                                              \
    SPEC_FLAG(o, "pull", 0, FLAG_CHOICE, pull, CHOICES_PULL, NULL,                                 \
              "When to pull the image (default missing)"),                                         \
    SPEC_FLAG(o, "health-cmd", 0, FLAG_STRING, health_cmd, NULL, "CMD",                            \
              "Command to run to check health (run by /bin/sh -c)"),                               \
    SPEC_FLAG(o, "health-interval", 0, FLAG_DURATION, health_interval, NULL, "DURATION",           \
              "Time between health checks"),                                                       \
    SPEC_FLAG(o, "health-timeout", 0, FLAG_DURATION, health_timeout, NULL, "DURATION",             \
              "Maximum time a health check may take"),                                             \
    SPEC_FLAG(o, "health-start-period", 0, FLAG_DURATION, health_start_period, NULL, "DURATION",   \
              "Start period before failed checks count"),                                          \
    SPEC_FLAG(o, "health-retries", 0, FLAG_UINT, health_retries, NULL, "N",                        \
              "Consecutive failures needed to report unhealthy"),                                  \
    SPEC_FLAG(o, "no-healthcheck", 0, FLAG_BOOL, no_healthcheck, NULL, NULL,                       \
              "Disable any container-specified HEALTHCHECK"),                                      \
    SPEC_FLAG(o, "endpoint-mode", 0, FLAG_CHOICE, endpoint_mode, CHOICES_ENDPOINT_MODE, NULL,      \
              "Endpoint mode (default vip)"),                                                      \
    SPEC_FLAG(o, "task-history-limit", 0, FLAG_UINT, history_limit, NULL, "N",                     \
              "Tasks kept per slot (0 = cluster default, 5)")
// clang-format on

/* Service modes, in the order of `--mode` choices. */
#define CHOICES_MODE "replicated|global|replicated-job|global-job"
enum spec_mode { SPEC_REPLICATED, SPEC_GLOBAL, SPEC_REPLICATED_JOB, SPEC_GLOBAL_JOB };

/* A spec with the CLI's defaults (docker's): a replicated service has 1 replica, update and
 * rollback parallelism 1 and monitor 5s, restart condition any; a replicated job 1 completion, 1 at
 * a time; jobs restart on-failure and have no update/rollback config (a changed job runs again as a
 * whole). */
Shoal__ServiceSpec *spec_new_default(arena_t *arena, enum spec_mode mode);
/* "replicated", "global", "replicated job", "global job" (docker's MODE column). */
const char *spec_mode_name(const Shoal__ServiceSpec *spec);
bool spec_is_job(const Shoal__ServiceSpec *spec);
/* Applies every given flag to `spec`. 0, or -1 after printing "shoal: <command>: --flag: ...". */
int spec_apply(cli_t *cli, arena_t *arena, Shoal__ServiceSpec *spec, const spec_flags_t *f);

/* A job's numbers, counted over the tasks of its current spec (docker's REPLICAS column for jobs:
 * "running/desired (completed/total completed)"). */
typedef struct job_counts {
    uint64_t running;   /* RUNNING */
    uint64_t active;    /* wanted and not ended yet */
    uint64_t completed; /* COMPLETE */
    uint64_t total;     /* completions wanted: total_completions, or one per node of a global job */
    uint64_t desired; /* tasks that should be active now: min(max concurrent, total - completed) */
} job_counts_t;
void job_count(const Shoal__Service *svc, Shoal__Task *const *tasks, size_t ntasks,
               job_counts_t *ret);

/* Whether the task's spec runs a health check (a test other than NONE; an image's own
 * HEALTHCHECK is not known here). */
bool task_has_healthcheck(const Shoal__Task *t);
/* RUNNING and, with a health check, reported healthy: a task counts as running only once healthy
 * (the orchestrator's rule for updates and `service ls`). */
bool task_counts_running(const Shoal__Task *t);

/* "web.1" for a replicated task, "web.<node id>" for a global one. */
const char *task_display_name(arena_t *arena, const Shoal__Task *t);
/* The service's name, or its id when it has none. */
const char *service_display_name(const Shoal__Service *s);
/* ServiceInspect; prints `service "x" not found` and the like. 0 or -1. */
int service_lookup(cli_t *cli, arena_t *arena, const char *ref, Shoal__Service **ret);
