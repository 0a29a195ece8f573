/* config — a cluster's state directory and the files `shoal init` writes into it.
 *
 * <state>/cluster.conf            key=value: cluster_id, cluster_key, created_ms
 * <state>/keys/public/<name>.key  Curve public certificates (zcert format) of every process
 *                                  that may connect: the daemons' kinds, "admin", "agent"
 * <state>/keys/private/<name>.key_secret   the matching secret certificates (mode 0600)
 * <state>/run/<kind>.rpc|.pub     ipc endpoints of the daemons on this node
 * <state>/run/<kind>.pid          pid files written by `shoal cluster up`
 * <state>/logs/<kind>.log         daemon logs when started by `shoal cluster up`
 * <state>/store/                  RocksDB of shoal-store
 * <state>/agent/                  agent local state (node id) */
#pragma once
#include <limits.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define SHOAL_DEFAULT_STATE_DIR "/var/lib/shoal"
#define SHOAL_VERSION           "0.1.0"

typedef struct shoal_config {
    char state_dir[PATH_MAX];
    char cluster_id[64];
    char cluster_key[128];
    int64_t created_ms;
} shoal_config_t;

/* The state dir a command should use: explicit argument, else $SHOAL_STATE_DIR, else default. */
const char *config_state_dir(const char *explicit_dir);

/* Loads <state>/cluster.conf. -ENOENT when the cluster was never initialised. */
int config_load(const char *state_dir, shoal_config_t *ret);

/* Creates the state dir, cluster.conf and a Curve keypair for each name in `names` (NULL
 * terminated) that does not have one yet. Idempotent: existing keys are kept. */
int config_init(const char *state_dir, const char *const *names);

/* Path helpers: "<state>/<a>/<b>" into buf; return buf. */
char *config_path(const shoal_config_t *cfg, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "ipc://<state>/run/<kind>.rpc" and ".pub" */
void config_rpc_endpoint(const shoal_config_t *cfg, const char *kind, char *buf, size_t len);
void config_pub_endpoint(const shoal_config_t *cfg, const char *kind, char *buf, size_t len);

/* Milliseconds: wall clock (for timestamps users see) and monotonic (for timers). */
int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);

/* A random id: 25 lowercase base36 characters, like SwarmKit's. buf >= 26 bytes. */
void id_random(char *buf);
