/* table — aligned columns for people, and the small formatters the listings share.
 *
 * Rows are buffered, then printed with every column as wide as its widest cell plus 3 spaces,
 * and at least 10 — the layout of docker's tabwriter, so `shoal service ls` lines up like
 * `docker service ls`. The last column is never padded (no trailing blanks). Widths count UTF-8
 * characters, not bytes. */
#include <stdlib.h>
#include <string.h>

#include "shoal.h"

#define TABLE_MIN_WIDTH 10
#define TABLE_PADDING   3

struct table {
    size_t ncols;
    size_t nrows; /* including the header */
    size_t cap;
    char **cells; /* nrows * ncols */
};

static size_t display_width(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

table_t *table_new(const char *const *headers, size_t ncols) {
    table_t *self = calloc(1, sizeof *self);
    if (!self)
        abort();
    self->ncols = ncols;
    table_add(self, headers);
    return self;
}

void table_destroy(table_t **self_p) {
    if (!self_p || !*self_p)
        return;
    table_t *self = *self_p;
    for (size_t i = 0; i < self->nrows * self->ncols; i++)
        free(self->cells[i]);
    free(self->cells);
    free(self);
    *self_p = NULL;
}

void table_add(table_t *self, const char *const *cells) {
    if (self->nrows == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 16;
        self->cells = realloc(self->cells, self->cap * self->ncols * sizeof *self->cells);
        if (!self->cells)
            abort();
    }
    for (size_t c = 0; c < self->ncols; c++) {
        char *copy = strdup(cells[c] ? cells[c] : "");
        if (!copy)
            abort();
        self->cells[self->nrows * self->ncols + c] = copy;
    }
    self->nrows++;
}

void table_print(const table_t *self, FILE *out) {
    size_t *width = calloc(self->ncols, sizeof *width);
    if (!width)
        abort();
    for (size_t r = 0; r < self->nrows; r++)
        for (size_t c = 0; c < self->ncols; c++) {
            size_t w = display_width(self->cells[r * self->ncols + c]) + TABLE_PADDING;
            if (w > width[c])
                width[c] = w;
        }
    for (size_t c = 0; c < self->ncols; c++)
        if (width[c] < TABLE_MIN_WIDTH)
            width[c] = TABLE_MIN_WIDTH;
    for (size_t r = 0; r < self->nrows; r++) {
        for (size_t c = 0; c < self->ncols; c++) {
            const char *cell = self->cells[r * self->ncols + c];
            fputs(cell, out);
            if (c + 1 < self->ncols)
                fprintf(out, "%*s", (int)(width[c] - display_width(cell)), "");
        }
        fputc('\n', out);
    }
    free(width);
}

const char *id_short(arena_t *arena, const char *id, bool no_trunc) {
    if (!id)
        return "";
    if (no_trunc || strlen(id) <= 12)
        return id;
    return arena_printf(arena, "%.12s", id);
}

const char *task_state_name(int state, bool lower) {
    static const struct {
        int state;
        const char *name;
    } names[] = {
        {SHOAL__TASK_STATE__NEW, "New"},
        {SHOAL__TASK_STATE__PENDING, "Pending"},
        {SHOAL__TASK_STATE__ASSIGNED, "Assigned"},
        {SHOAL__TASK_STATE__ACCEPTED, "Accepted"},
        {SHOAL__TASK_STATE__PREPARING, "Preparing"},
        {SHOAL__TASK_STATE__READY, "Ready"},
        {SHOAL__TASK_STATE__STARTING, "Starting"},
        {SHOAL__TASK_STATE__RUNNING, "Running"},
        {SHOAL__TASK_STATE__COMPLETE, "Complete"},
        {SHOAL__TASK_STATE__SHUTDOWN, "Shutdown"},
        {SHOAL__TASK_STATE__FAILED, "Failed"},
        {SHOAL__TASK_STATE__REJECTED, "Rejected"},
        {SHOAL__TASK_STATE__REMOVE, "Remove"},
        {SHOAL__TASK_STATE__ORPHANED, "Orphaned"},
    };
    static const char *lowered[sizeof names / sizeof names[0]];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i].state != state)
            continue;
        if (!lower)
            return names[i].name;
        if (!lowered[i]) {
            char *l = strdup(names[i].name);
            if (!l)
                abort();
            l[0] = (char)(l[0] - 'A' + 'a');
            lowered[i] = l;
        }
        return lowered[i];
    }
    return lower ? "unknown" : "Unknown";
}

const char *human_duration(arena_t *arena, int64_t ms) {
    int64_t seconds = ms / 1000;
    if (seconds < 1)
        return "Less than a second";
    if (seconds == 1)
        return "1 second";
    if (seconds < 60)
        return arena_printf(arena, "%lld seconds", (long long)seconds);
    int64_t minutes = seconds / 60;
    if (minutes == 1)
        return "About a minute";
    if (minutes < 60)
        return arena_printf(arena, "%lld minutes", (long long)minutes);
    int64_t hours = (seconds + 1800) / 3600;
    if (hours == 1)
        return "About an hour";
    if (hours < 48)
        return arena_printf(arena, "%lld hours", (long long)hours);
    if (hours < 24 * 7 * 2)
        return arena_printf(arena, "%lld days", (long long)(hours / 24));
    if (hours < 24 * 30 * 2)
        return arena_printf(arena, "%lld weeks", (long long)(hours / 24 / 7));
    if (hours < 24 * 365 * 2)
        return arena_printf(arena, "%lld months", (long long)(hours / 24 / 30));
    return arena_printf(arena, "%lld years", (long long)(hours / 24 / 365));
}
