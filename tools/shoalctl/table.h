/* table — aligned text columns with a header, the human form of every shoalctl listing. */
#pragma once
#include <stddef.h>
#include <stdio.h>

typedef struct table table_t;

/* A table with `ncols` columns named by the following `ncols` strings ("KIND", "PID", ...). */
table_t *table_new(size_t ncols, ...);
void table_destroy(table_t **self_p);

/* Starts a new row; the cells that follow fill it from the left. */
int table_row(table_t *self);
/* Appends one cell to the current row (ignored past the last column). -ENOMEM on failure. */
int table_cell(table_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

size_t table_rows(const table_t *self);
/* Sorts the rows by the text of column `col`, then by the following columns. */
void table_sort(table_t *self, size_t col);
/* Prints the header and rows, columns separated by three spaces, the last one not padded. */
void table_print(const table_t *self, FILE *out);
