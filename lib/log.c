/* log — see log.h. A single process-wide logger: daemons are single-threaded loops plus a few
 * actors, so one line is formatted into a stack buffer and written with one write(2) call, which
 * keeps lines whole when actors log concurrently. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_daemon[32] = "shoal";
static enum log_level log_level_now = LOG_LEVEL_INFO;
static void (*log_sink)(void *, enum log_level, const char *);
static void *log_sink_ctx;

static const char *const level_names[] = {"err", "warn", "info", "debug"};

void log_init(const char *daemon, enum log_level level) {
    snprintf(log_daemon, sizeof log_daemon, "%s", daemon);
    log_level_now = level;
}

void log_set_level(enum log_level level) {
    log_level_now = level;
}

enum log_level log_get_level(void) {
    return log_level_now;
}

void log_set_sink(void (*sink)(void *, enum log_level, const char *), void *ctx) {
    log_sink = sink;
    log_sink_ctx = ctx;
}

void log_write(enum log_level level, const char *fmt, ...) {
    if (level > log_level_now)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n =
        snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s daemon=%s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (long)(tv.tv_usec / 1000), level_names[level], log_daemon);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len + 1);
    (void)w;
    if (log_sink) {
        line[len] = '\0';
        log_sink(log_sink_ctx, level, line + n);
    }
}
