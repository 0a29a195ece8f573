/* config — the state directory of a cluster (layout in config.h), clocks and random ids.
 *
 * cluster.conf is a few key=value lines written once by config_init(); the keys directory holds
 * one CZMQ certificate pair per identity. Secrets are created with mode 0600 inside a 0700
 * directory and never logged. */
#include "config.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *config_state_dir(const char *explicit_dir) {
    if (explicit_dir && *explicit_dir)
        return explicit_dir;
    const char *env = getenv("SHOAL_STATE_DIR");
    if (env && *env)
        return env;
    return SHOAL_DEFAULT_STATE_DIR;
}

char *config_path(const shoal_config_t *cfg, char *buf, size_t len, const char *fmt, ...) {
    int n = snprintf(buf, len, "%s/", cfg->state_dir);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, len - (size_t)n, fmt, ap);
    va_end(ap);
    return buf;
}

void config_rpc_endpoint(const shoal_config_t *cfg, const char *kind, char *buf, size_t len) {
    snprintf(buf, len, "ipc://%s/run/%s.rpc", cfg->state_dir, kind);
}

void config_pub_endpoint(const shoal_config_t *cfg, const char *kind, char *buf, size_t len) {
    snprintf(buf, len, "ipc://%s/run/%s.pub", cfg->state_dir, kind);
}

int64_t clock_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void id_random(char *buf) {
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    unsigned char raw[25];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (unsigned char)random();
    }
    for (size_t i = 0; i < sizeof raw; i++)
        buf[i] = digits[raw[i] % 36];
    buf[25] = '\0';
}

static void hex_random(char *buf, size_t nbytes) {
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        nbytes = sizeof raw;
    if (RAND_bytes(raw, (int)nbytes) != 1)
        for (size_t i = 0; i < nbytes; i++)
            raw[i] = (unsigned char)random();
    for (size_t i = 0; i < nbytes; i++)
        sprintf(buf + 2 * i, "%02x", raw[i]);
}

int config_load(const char *state_dir, shoal_config_t *ret) {
    shoal_config_t cfg = {0};
    snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", state_dir);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/cluster.conf", state_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#')
            continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (!strcmp(k, "cluster_id"))
            snprintf(cfg.cluster_id, sizeof cfg.cluster_id, "%s", v);
        else if (!strcmp(k, "cluster_key"))
            snprintf(cfg.cluster_key, sizeof cfg.cluster_key, "%s", v);
        else if (!strcmp(k, "created_ms"))
            cfg.created_ms = strtoll(v, NULL, 10);
    }
    fclose(f);
    if (!cfg.cluster_id[0] || !cfg.cluster_key[0])
        return -EINVAL;
    *ret = cfg;
    return 0;
}

static int mkdir_mode(const char *path, mode_t mode) {
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int config_init(const char *state_dir, const char *const *names) {
    char path[PATH_MAX + 64];
    int r;
    if ((r = mkdir_mode(state_dir, 0755)) < 0)
        return r;
    static const char *const subdirs[] = {"keys", "keys/public", "run", "logs", "agent", NULL};
    for (const char *const *s = subdirs; *s; s++) {
        snprintf(path, sizeof path, "%s/%s", state_dir, *s);
        if ((r = mkdir_mode(path, 0755)) < 0)
            return r;
    }
    snprintf(path, sizeof path, "%s/keys/private", state_dir);
    if ((r = mkdir_mode(path, 0700)) < 0)
        return r;

    snprintf(path, sizeof path, "%s/cluster.conf", state_dir);
    if (access(path, F_OK) < 0) {
        char id[26], key[65], tmp[PATH_MAX + 64];
        id_random(id);
        hex_random(key, 32);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            return -errno;
        dprintf(fd,
                "# shoal cluster configuration (written by shoal init)\ncluster_id=%s\n"
                "cluster_key=%s\ncreated_ms=%lld\n",
                id, key, (long long)clock_wall_ms());
        if (fsync(fd) < 0 || close(fd) < 0)
            return -errno;
        if (rename(tmp, path) < 0)
            return -errno;
    }
    for (const char *const *n = names; n && *n; n++) {
        char pub[PATH_MAX + 64], sec[PATH_MAX + 64];
        snprintf(pub, sizeof pub, "%s/keys/public/%s.key", state_dir, *n);
        snprintf(sec, sizeof sec, "%s/keys/private/%s.key", state_dir, *n);
        char secfile[PATH_MAX + 80];
        snprintf(secfile, sizeof secfile, "%s_secret", sec);
        if (access(secfile, F_OK) == 0 && access(pub, F_OK) == 0)
            continue;
        zcert_t *cert = zcert_new();
        if (!cert)
            return -ENOMEM;
        zcert_set_meta(cert, "name", "%s", *n);
        /* zcert_save writes <path> (public) and <path>_secret (mode 0600). */
        int rc = zcert_save(cert, sec);
        if (rc == 0)
            rc = zcert_save_public(cert, pub);
        zcert_destroy(&cert);
        if (rc != 0)
            return -EIO;
        unlink(sec); /* the public half lives in keys/public */
    }
    return 0;
}
