/* table — aligned text columns with a header, for shoalctl's human output (busctl style).
 *
 * Cells are copied in as they are added, so callers may pass temporary strings. Widths are
 * counted in characters (UTF-8 code points), not bytes, so a name with an accent does not push
 * its row out of line. Control characters in cells (a newline in a health message) are shown as
 * spaces: one row is always one line. The tool owns this file; tools/shoal has its own. */
#include "table.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct table {
    size_t ncols;
    char **header;
    char ***rows; /* rows[r][c], NULL for a missing cell */
    size_t nrows, cap;
    size_t fill; /* next column of the current row */
};

table_t *table_new(size_t ncols, ...) {
    table_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ncols = ncols;
    self->header = calloc(ncols ? ncols : 1, sizeof *self->header);
    if (!self->header) {
        free(self);
        return NULL;
    }
    va_list ap;
    va_start(ap, ncols);
    for (size_t c = 0; c < ncols; c++) {
        const char *h = va_arg(ap, const char *);
        self->header[c] = strdup(h ? h : "");
    }
    va_end(ap);
    return self;
}

static void row_free(char **row, size_t ncols) {
    if (!row)
        return;
    for (size_t c = 0; c < ncols; c++)
        free(row[c]);
    free(row);
}

void table_destroy(table_t **self_p) {
    table_t *self = *self_p;
    if (!self)
        return;
    for (size_t r = 0; r < self->nrows; r++)
        row_free(self->rows[r], self->ncols);
    free(self->rows);
    for (size_t c = 0; c < self->ncols; c++)
        free(self->header[c]);
    free(self->header);
    free(self);
    *self_p = NULL;
}

int table_row(table_t *self) {
    if (self->nrows == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 16;
        char ***rows = realloc(self->rows, cap * sizeof *rows);
        if (!rows)
            return -ENOMEM;
        self->rows = rows;
        self->cap = cap;
    }
    char **row = calloc(self->ncols ? self->ncols : 1, sizeof *row);
    if (!row)
        return -ENOMEM;
    self->rows[self->nrows++] = row;
    self->fill = 0;
    return 0;
}

int table_cell(table_t *self, const char *fmt, ...) {
    if (self->nrows == 0 && table_row(self) < 0)
        return -ENOMEM;
    if (self->fill >= self->ncols)
        return 0;
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -ENOMEM;
    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    self->rows[self->nrows - 1][self->fill++] = text;
    return 0;
}

size_t table_rows(const table_t *self) {
    return self->nrows;
}

typedef struct sort_key {
    size_t col, ncols;
} sort_key_t;

static int row_cmp(const void *a, const void *b, void *arg) {
    const sort_key_t *k = arg;
    char *const *ra = *(char **const *)a, *const *rb = *(char **const *)b;
    for (size_t c = k->col; c < k->ncols; c++) {
        int d = strcmp(ra[c] ? ra[c] : "", rb[c] ? rb[c] : "");
        if (d)
            return d;
    }
    return 0;
}

void table_sort(table_t *self, size_t col) {
    if (col >= self->ncols || self->nrows < 2)
        return;
    sort_key_t k = {col, self->ncols};
    qsort_r(self->rows, self->nrows, sizeof *self->rows, row_cmp, &k);
}

static size_t display_width(const char *s) {
    size_t w = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

static void print_row(char *const *cells, const size_t *width, size_t ncols, FILE *out) {
    size_t last = ncols;
    while (last > 0 && (!cells[last - 1] || !*cells[last - 1]))
        last--;
    for (size_t c = 0; c < last; c++) {
        const char *s = cells[c] ? cells[c] : "";
        fputs(s, out);
        if (c + 1 < last)
            fprintf(out, "%*s", (int)(width[c] - display_width(s) + 3), "");
    }
    fputc('\n', out);
}

void table_print(const table_t *self, FILE *out) {
    size_t *width = calloc(self->ncols ? self->ncols : 1, sizeof *width);
    if (!width)
        return;
    for (size_t c = 0; c < self->ncols; c++)
        width[c] = display_width(self->header[c]);
    for (size_t r = 0; r < self->nrows; r++)
        for (size_t c = 0; c < self->ncols; c++) {
            size_t w = display_width(self->rows[r][c]);
            if (w > width[c])
                width[c] = w;
        }
    print_row(self->header, width, self->ncols, out);
    for (size_t r = 0; r < self->nrows; r++)
        print_row(self->rows[r], width, self->ncols, out);
    free(width);
}
