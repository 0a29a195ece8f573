/* log — structured key=value logging to stderr, one line per event.
 *
 * Daemons call log_init() once with their name; lib/ code logs only at debug level (STYLE).
 * Format: "ts=2026-11-23T15:16:05.123Z level=info daemon=store msg=\"...\" k=v ...".
 * Callers write the key=value tail themselves: log_info("lease expired id=%lld", id).
 * Never pass a secret to these functions. */
#pragma once
#include <stdarg.h>

enum log_level { LOG_LEVEL_ERR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_init(const char *daemon, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Optional sink that sees every line logged (the bus publishes them as events). */
void log_set_sink(void (*sink)(void *ctx, enum log_level level, const char *line), void *ctx);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)  log_write(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LEVEL_DEBUG)                                                    \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                               \
    } while (0)
