/* args — table-driven flag parsing for every shoal command, and Docker's value syntaxes.
 *
 * Each command describes its flags as a cli_flag_t table (name, kind, destination, help); one
 * parser handles all of them, so flag syntax and error lines are the same everywhere:
 *   --name value, --name=value, -d, -dq (bundled booleans), -e K=V, "--" ends the flags.
 * Flags and arguments may be interleaved, except for commands whose arguments are a command line
 * of their own (`service create IMAGE CMD ARG...`): there the first argument ends the flags.
 * A bad value gives one line: `shoal: service create: --replicas: must be a number (got "x")`.
 *
 * Values follow the docker CLI: durations are Go durations ("1m30s", "500ms", "1.5h") and a bare
 * number is seconds; sizes are 1024-based with an optional unit (b, k, m, g, t, with or without a
 * trailing "b"/"ib"); CPUs are decimal ("0.5") and become nano CPUs without floating point;
 * ratios (--update-max-failure-ratio) are decimals from 0 to 1. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "shoal.h"

int parse_uint(const char *s, uint64_t *ret) {
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* Reads "123.456" at *p into an integer count of `scale` units per 1 (scale = 10^digits of
 * precision kept), advancing *p. -EINVAL when no digit, -ERANGE on overflow. */
static int parse_decimal(const char **p, int64_t scale, int64_t *ret) {
    const char *s = *p;
    int64_t whole = 0, frac = 0, frac_scale = scale;
    bool digits = false;
    while (isdigit((unsigned char)*s)) {
        if (whole > (INT64_MAX - 9) / 10)
            return -ERANGE;
        whole = whole * 10 + (*s++ - '0');
        digits = true;
    }
    if (*s == '.') {
        s++;
        while (isdigit((unsigned char)*s)) {
            if (frac_scale >= 10) {
                frac_scale /= 10;
                frac += (*s - '0') * frac_scale;
            }
            s++;
            digits = true;
        }
    }
    if (!digits)
        return -EINVAL;
    if (whole > INT64_MAX / scale)
        return -ERANGE;
    *ret = whole * scale + frac;
    *p = s;
    return 0;
}

int parse_duration_ms(const char *s, int64_t *ret) {
    static const struct {
        const char *unit;
        int64_t ns;
    } units[] = {
        {"ns", 1},       {"us", 1000},        {"\xc2\xb5s", 1000}, /* µs */
        {"ms", 1000000}, {"s", 1000000000LL}, {"m", 60 * 1000000000LL}, {"h", 3600 * 1000000000LL},
    };
    if (!s || !*s)
        return -EINVAL;
    const char *p = s;
    int64_t value;
    /* A bare number is seconds. */
    if (parse_decimal(&p, 1000, &value) == 0 && *p == '\0') {
        *ret = value;
        return 0;
    }
    p = s;
    long double total_ns = 0;
    while (*p) {
        int64_t milli; /* the number, in thousandths */
        if (parse_decimal(&p, 1000, &milli) < 0)
            return -EINVAL;
        size_t best = 0;
        int match = -1;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t n = strlen(units[i].unit);
            /* Longest unit wins: "ms" before "m". */
            if (!strncmp(p, units[i].unit, n) && n > best) {
                best = n;
                match = (int)i;
            }
        }
        if (match < 0)
            return -EINVAL;
        p += best;
        total_ns += (long double)milli * units[match].ns / 1000.0L;
    }
    long double ms = total_ns / 1e6L;
    if (ms > (long double)INT64_MAX)
        return -ERANGE;
    *ret = (int64_t)ms;
    return 0;
}

int parse_bytes(const char *s, int64_t *ret) {
    if (!s || !*s)
        return -EINVAL;
    const char *p = s;
    int64_t milli;
    if (parse_decimal(&p, 1000, &milli) < 0)
        return -EINVAL;
    int64_t mult = 1;
    switch (tolower((unsigned char)*p)) {
    case '\0':
        break;
    case 'b':
        p++;
        if (*p)
            return -EINVAL;
        break;
    case 'k':
        mult = 1LL << 10;
        break;
    case 'm':
        mult = 1LL << 20;
        break;
    case 'g':
        mult = 1LL << 30;
        break;
    case 't':
        mult = 1LL << 40;
        break;
    case 'p':
        mult = 1LL << 50;
        break;
    default:
        return -EINVAL;
    }
    if (mult > 1) {
        p++;
        if (!strcasecmp(p, "ib") || !strcasecmp(p, "b") || !*p)
            p += strlen(p);
        else
            return -EINVAL;
    }
    long double bytes = (long double)milli * mult / 1000.0L;
    if (bytes > (long double)INT64_MAX)
        return -ERANGE;
    *ret = (int64_t)bytes;
    return 0;
}

int parse_nano_cpus(const char *s, int64_t *ret) {
    const char *p = s;
    int64_t nano;
    if (!s || parse_decimal(&p, 1000000000LL, &nano) < 0 || *p)
        return -EINVAL;
    *ret = nano;
    return 0;
}

int parse_ratio(const char *s, float *ret) {
    const char *p = s;
    int64_t millionths;
    if (!s || parse_decimal(&p, 1000000, &millionths) < 0 || *p || millionths > 1000000)
        return -EINVAL;
    *ret = (float)millionths / 1e6f;
    return 0;
}

int choice_index(const char *choices, const char *word) {
    size_t len = strlen(word);
    int i = 0;
    for (const char *c = choices; *c; i++) {
        const char *bar = strchr(c, '|');
        size_t n = bar ? (size_t)(bar - c) : strlen(c);
        if (n == len && !strncmp(c, word, n))
            return i;
        if (!bar)
            break;
        c = bar + 1;
    }
    return -1;
}

static bool flag_takes_value(const cli_flag_t *f) {
    return f->kind != FLAG_BOOL;
}

static const char *flag_value_hint(const cli_flag_t *f) {
    switch (f->kind) {
    case FLAG_UINT:
        return "must be a number";
    case FLAG_DURATION:
        return "must be a duration like 10s, 500ms or 1m30s";
    case FLAG_BYTES:
        return "must be a size like 512k, 64M or 1G";
    case FLAG_CPUS:
        return "must be a number of CPUs like 0.5 or 2";
    case FLAG_RATIO:
        return "must be a number between 0 and 1 like 0.2";
    default:
        return "invalid value";
    }
}

/* Stores one flag's value. 0, or -1 after printing the error. */
static int flag_set(cli_t *cli, const cli_flag_t *f, const char *value) {
    int r = 0;
    switch (f->kind) {
    case FLAG_BOOL:
        *(bool *)f->dest = strcmp(value, "false") != 0;
        break;
    case FLAG_STRING:
        *(const char **)f->dest = value;
        break;
    case FLAG_LIST:
        strv_push(cli->arena, f->dest, value);
        break;
    case FLAG_UINT:
        r = parse_uint(value, f->dest);
        break;
    case FLAG_DURATION:
        r = parse_duration_ms(value, f->dest);
        break;
    case FLAG_BYTES:
        r = parse_bytes(value, f->dest);
        break;
    case FLAG_CPUS:
        r = parse_nano_cpus(value, f->dest);
        break;
    case FLAG_RATIO:
        r = parse_ratio(value, f->dest);
        break;
    case FLAG_CHOICE: {
        int i = choice_index(f->choices, value);
        if (i < 0) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", f->choices);
            for (char *c = buf; *c; c++)
                if (*c == '|')
                    *c = ',';
            /* "any,on-failure,none" -> "any, on-failure, none" reads better in one line. */
            char out[512];
            size_t o = 0;
            for (const char *c = buf; *c && o + 2 < sizeof out; c++) {
                out[o++] = *c;
                if (*c == ',')
                    out[o++] = ' ';
            }
            out[o] = '\0';
            cli_fail_cmd(cli, "--%s: must be one of %s (got \"%s\")", f->name, out, value);
            return -1;
        }
        *(int *)f->dest = i;
        break;
    }
    }
    if (r < 0) {
        cli_fail_cmd(cli, "--%s: %s (got \"%s\")", f->name, flag_value_hint(f), value);
        return -1;
    }
    if (f->given)
        *f->given = true;
    return 0;
}

static const cli_flag_t state_dir_flag = {"state-dir",
                                          0,
                                          FLAG_STRING,
                                          NULL,
                                          NULL,
                                          NULL,
                                          "DIR",
                                          "State directory (default $SHOAL_STATE_DIR or "
                                          "/var/lib/shoal)"};

static const cli_flag_t *flag_find_long(const cmd_spec_t *spec, const char *name, size_t len) {
    for (const cli_flag_t *f = spec->flags; f && f->name; f++)
        if (strlen(f->name) == len && !strncmp(f->name, name, len))
            return f;
    if (strlen(state_dir_flag.name) == len && !strncmp(state_dir_flag.name, name, len))
        return &state_dir_flag;
    return NULL;
}

static const cli_flag_t *flag_find_short(const cmd_spec_t *spec, char c) {
    for (const cli_flag_t *f = spec->flags; f && f->name; f++)
        if (f->short_name == c)
            return f;
    return NULL;
}

/* Applies a flag found by name; the state-dir flag writes to the context. */
static int flag_apply(cli_t *cli, const cli_flag_t *f, const char *value) {
    if (f == &state_dir_flag) {
        if (!*value) {
            cli_fail_cmd(cli, "--state-dir: must not be empty");
            return -1;
        }
        cli->state_dir_flag = value;
        return 0;
    }
    return flag_set(cli, f, value);
}

int cli_parse(cli_t *cli, const cmd_spec_t *spec, int argc, char **argv, strv_t *args) {
    bool flags_done = false;
    *args = (strv_t){0};
    cli->command = spec->path;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (flags_done || a[0] != '-' || a[1] == '\0') {
            strv_push(cli->arena, args, a);
            if (spec->flags_end_at_first_arg)
                flags_done = true;
            continue;
        }
        if (!strcmp(a, "--")) {
            flags_done = true;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_print_help(spec, stdout);
            return 1;
        }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const cli_flag_t *f = flag_find_long(spec, name, len);
            if (!f) {
                cli_fail_cmd(cli, "unknown flag: --%.*s (see: shoal %s --help)", (int)len, name,
                             spec->path);
                return -1;
            }
            const char *value = "true";
            if (flag_takes_value(f)) {
                if (eq)
                    value = eq + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else {
                    cli_fail_cmd(cli, "--%s: needs a value", f->name);
                    return -1;
                }
            } else if (eq) {
                /* --init=false: a boolean may be spelled out, to undo a default or a setting. */
                if (!strcmp(eq + 1, "true") || !strcmp(eq + 1, "1"))
                    value = "true";
                else if (!strcmp(eq + 1, "false") || !strcmp(eq + 1, "0"))
                    value = "false";
                else {
                    cli_fail_cmd(cli, "--%s: must be true or false (got \"%s\")", f->name, eq + 1);
                    return -1;
                }
            }
            if (flag_apply(cli, f, value) < 0)
                return -1;
            continue;
        }
        /* Short flags: -d, -dq, -e K=V, -eK=V. */
        for (const char *c = a + 1; *c; c++) {
            const cli_flag_t *f = flag_find_short(spec, *c);
            if (!f) {
                cli_fail_cmd(cli, "unknown flag: -%c (see: shoal %s --help)", *c, spec->path);
                return -1;
            }
            if (!flag_takes_value(f)) {
                if (flag_set(cli, f, "true") < 0)
                    return -1;
                continue;
            }
            const char *value;
            if (c[1])
                value = c + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                cli_fail_cmd(cli, "-%c: needs a value", *c);
                return -1;
            }
            if (flag_set(cli, f, value) < 0)
                return -1;
            break;
        }
    }
    if ((int)args->n < spec->min_args) {
        if (spec->min_args == 1)
            cli_fail_cmd(cli, "requires at least 1 argument: %s (see: shoal %s --help)", spec->args,
                         spec->path);
        else
            cli_fail_cmd(cli, "requires at least %d arguments (usage: shoal %s %s)", spec->min_args,
                         spec->path, spec->args);
        return -1;
    }
    if (spec->max_args >= 0 && (int)args->n > spec->max_args) {
        if (spec->max_args == 0)
            cli_fail_cmd(cli, "takes no arguments (got \"%s\")", args->v[0]);
        else
            cli_fail_cmd(cli, "too many arguments (got \"%s\"; see: shoal %s --help)",
                         args->v[spec->max_args], spec->path);
        return -1;
    }
    return 0;
}

void cli_print_help(const cmd_spec_t *spec, FILE *out) {
    fprintf(out, "Usage:  shoal %s %s\n\n%s\n", spec->path, spec->args ? spec->args : "",
            spec->summary);
    fprintf(out, "\nOptions:\n");
    const cli_flag_t *all[128];
    size_t n = 0;
    for (const cli_flag_t *f = spec->flags; f && f->name && n < 127; f++)
        all[n++] = f;
    all[n++] = &state_dir_flag;
    for (size_t i = 0; i < n; i++) {
        const cli_flag_t *f = all[i];
        char left[96];
        const char *meta = f->metavar;
        if (!meta && f->kind == FLAG_CHOICE)
            meta = f->choices;
        if (!meta)
            meta = "value";
        char prefix[8] = "    ";
        if (f->short_name)
            snprintf(prefix, sizeof prefix, "-%c, ", f->short_name);
        snprintf(left, sizeof left, "%s--%s%s%s", prefix, f->name, flag_takes_value(f) ? " " : "",
                 flag_takes_value(f) ? meta : "");
        fprintf(out, "  %-38s %s%s\n", left, f->help, f->kind == FLAG_LIST ? " (repeatable)" : "");
    }
    fprintf(out, "  %-38s %s\n", "-h, --help", "Print this help");
}

void strv_push(arena_t *arena, strv_t *list, const char *s) {
    ARENA_PUSH(arena, &list->v, &list->n, s);
}
