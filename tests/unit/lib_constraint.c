/* Placement constraints: parsing every key form, both operators, label presence, case rules and
 * the error lines that name the bad expression. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "constraint.h"

/* A node on the stack; the constraint code only reads it. */
typedef struct {
    Shoal__Node node;
    Shoal__Meta meta;
    Shoal__NodeSpec spec;
    Shoal__Annotations ann;
    Shoal__NodeDescription desc;
    Shoal__Platform platform;
    Shoal__EngineDescription engine;
    Shoal__Label labels[4], elabels[4];
    Shoal__Label *label_ptrs[4], *elabel_ptrs[4];
} test_node_t;

static void node_init(test_node_t *t, const char *id, const char *hostname, int role) {
    memset(t, 0, sizeof *t);
    t->node = (Shoal__Node)SHOAL__NODE__INIT;
    t->meta = (Shoal__Meta)SHOAL__META__INIT;
    t->spec = (Shoal__NodeSpec)SHOAL__NODE_SPEC__INIT;
    t->ann = (Shoal__Annotations)SHOAL__ANNOTATIONS__INIT;
    t->desc = (Shoal__NodeDescription)SHOAL__NODE_DESCRIPTION__INIT;
    t->platform = (Shoal__Platform)SHOAL__PLATFORM__INIT;
    t->engine = (Shoal__EngineDescription)SHOAL__ENGINE_DESCRIPTION__INIT;
    t->meta.id = (char *)id;
    t->node.meta = &t->meta;
    t->node.spec = &t->spec;
    t->spec.annotations = &t->ann;
    t->node.description = &t->desc;
    t->desc.hostname = (char *)hostname;
    t->desc.platform = &t->platform;
    t->platform.os = "linux";
    t->platform.architecture = "amd64";
    t->desc.engine = &t->engine;
    t->node.role = role;
}

static void node_label(test_node_t *t, const char *k, const char *v) {
    size_t i = t->ann.n_labels++;
    t->labels[i] = (Shoal__Label)SHOAL__LABEL__INIT;
    t->labels[i].key = (char *)k;
    t->labels[i].value = (char *)v;
    t->label_ptrs[i] = &t->labels[i];
    t->ann.labels = t->label_ptrs;
}

static void engine_label(test_node_t *t, const char *k, const char *v) {
    size_t i = t->engine.n_labels++;
    t->elabels[i] = (Shoal__Label)SHOAL__LABEL__INIT;
    t->elabels[i].key = (char *)k;
    t->elabels[i].value = (char *)v;
    t->elabel_ptrs[i] = &t->elabels[i];
    t->engine.labels = t->elabel_ptrs;
}

/* Parses `expr` (which must be valid) and matches it against the node. */
static bool matches(const char *expr, const Shoal__Node *node) {
    constraint_t c;
    char err[256] = "";
    int r = constraint_parse(expr, &c, err, sizeof err);
    if (r != 0)
        fail_msg("parse of \"%s\" failed: %s", expr, err);
    bool m = constraint_match(&c, node);
    constraint_clear(&c);
    return m;
}

static void test_constraint_parses_each_key_form(void **state) {
    static const struct {
        const char *expr;
        enum constraint_key key;
        const char *label, *value;
    } cases[] = {
        {"node.id==abc123", CONSTRAINT_KEY_NODE_ID, NULL, "abc123"},
        {"node.hostname==web-1", CONSTRAINT_KEY_HOSTNAME, NULL, "web-1"},
        {"node.role==manager", CONSTRAINT_KEY_ROLE, NULL, "manager"},
        {"node.platform.os==linux", CONSTRAINT_KEY_PLATFORM_OS, NULL, "linux"},
        {"node.platform.arch==amd64", CONSTRAINT_KEY_PLATFORM_ARCH, NULL, "amd64"},
        {"node.labels.zone==eu-1", CONSTRAINT_KEY_NODE_LABEL, "zone", "eu-1"},
        {"engine.labels.disk.kind==ssd", CONSTRAINT_KEY_ENGINE_LABEL, "disk.kind", "ssd"},
        {"Node.Hostname==h", CONSTRAINT_KEY_HOSTNAME, NULL, "h"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        constraint_t c;
        assert_int_equal(constraint_parse(cases[i].expr, &c, NULL, 0), 0);
        assert_int_equal(c.key, cases[i].key);
        assert_int_equal(c.op, CONSTRAINT_OP_EQ);
        if (cases[i].label)
            assert_string_equal(c.label, cases[i].label);
        else
            assert_null(c.label);
        assert_string_equal(c.value, cases[i].value);
        constraint_clear(&c);
    }
}

static void test_constraint_allows_spaces_around_operator(void **state) {
    constraint_t c;
    assert_int_equal(constraint_parse("  node.labels.zone  !=  us east 1 ", &c, NULL, 0), 0);
    assert_int_equal(c.key, CONSTRAINT_KEY_NODE_LABEL);
    assert_int_equal(c.op, CONSTRAINT_OP_NE);
    assert_string_equal(c.label, "zone");
    assert_string_equal(c.value, "us east 1");
    char buf[128];
    assert_string_equal(constraint_format(&c, buf, sizeof buf), "node.labels.zone!=us east 1");
    constraint_clear(&c);
}

static void test_constraint_eq_and_ne_on_hostname_and_role(void **state) {
    test_node_t n;
    node_init(&n, "n1", "Web-1", SHOAL__NODE_SPEC__ROLE__WORKER);
    assert_true(matches("node.hostname==web-1", &n.node)); /* case-insensitive */
    assert_false(matches("node.hostname!=WEB-1", &n.node));
    assert_false(matches("node.hostname==web-2", &n.node));
    assert_true(matches("node.hostname!=web-2", &n.node));
    assert_true(matches("node.role==worker", &n.node));
    assert_true(matches("node.role==Worker", &n.node));
    assert_false(matches("node.role==manager", &n.node));
    assert_true(matches("node.role!=manager", &n.node));
    n.node.role = SHOAL__NODE_SPEC__ROLE__MANAGER;
    assert_true(matches("node.role==manager", &n.node));
    assert_true(matches("node.id==n1", &n.node));
    assert_false(matches("node.id==n2", &n.node));
    assert_true(matches("node.platform.os==linux", &n.node));
    assert_true(matches("node.platform.arch!=arm64", &n.node));
    assert_false(matches("node.platform.arch==arm64", &n.node));
}

static void test_constraint_label_values_compare_exactly(void **state) {
    test_node_t n;
    node_init(&n, "n1", "h", SHOAL__NODE_SPEC__ROLE__WORKER);
    node_label(&n, "zone", "EU");
    engine_label(&n, "disk", "ssd");
    assert_true(matches("node.labels.zone==EU", &n.node));
    assert_false(matches("node.labels.zone==eu", &n.node));
    assert_true(matches("node.labels.zone!=eu", &n.node));
    assert_false(matches("node.labels.Zone==EU", &n.node)); /* label names are case-sensitive */
    assert_true(matches("engine.labels.disk==ssd", &n.node));
    assert_false(matches("engine.labels.disk==hdd", &n.node));
    assert_false(matches("node.labels.disk==ssd", &n.node)); /* engine label is not a node label */
}

static void test_constraint_absent_label_fails_eq_and_matches_ne(void **state) {
    test_node_t n;
    node_init(&n, "n1", "h", SHOAL__NODE_SPEC__ROLE__WORKER);
    assert_false(matches("node.labels.zone==a", &n.node));
    assert_true(matches("node.labels.zone!=a", &n.node));
    assert_false(matches("engine.labels.zone==a", &n.node));
    assert_true(matches("engine.labels.zone!=a", &n.node));
    /* A node with no description at all: hostname and platform read as empty. */
    n.node.description = NULL;
    n.node.spec = NULL;
    assert_false(matches("node.hostname==h", &n.node));
    assert_true(matches("node.hostname!=h", &n.node));
    assert_false(matches("node.platform.os==linux", &n.node));
    assert_true(matches("node.labels.zone!=a", &n.node));
}

static void expect_error(const char *expr, const char *needle) {
    constraint_t c = {0};
    char err[512] = "";
    assert_int_equal(constraint_parse(expr, &c, err, sizeof err), -EINVAL);
    assert_null(c.value);
    if (!strstr(err, needle))
        fail_msg("error for \"%s\" is \"%s\", expected it to contain \"%s\"", expr, err, needle);
}

static void test_constraint_errors_name_the_expression(void **state) {
    expect_error("node.labels.zone=a", "constraint \"node.labels.zone=a\": expected an operator");
    expect_error("node.hostname", "expected an operator (== or !=)");
    expect_error("==a", "missing key");
    expect_error("foo==bar", "constraint \"foo==bar\": unknown key \"foo\"");
    expect_error("node.label.zone==a", "unknown key \"node.label.zone\"");
    expect_error("node.labels.==a", "missing label name");
    expect_error("node.labels.a b==c", "label name \"a b\" is invalid");
    expect_error("node.role==", "missing value");
    expect_error("node.role==  ", "missing value");
    expect_error("node.role==a=b", "value \"a=b\" is invalid");
    expect_error("node.role==a<b", "value \"a<b\" is invalid");
    expect_error("node.role!==a", "value \"=a\" is invalid");
    expect_error("", "expected an operator");
    /* Unprintable bytes are shown as '?', so the error stays one line. */
    expect_error("node.role==a\nb", "constraint \"node.role==a?b\"");
    char err[64];
    assert_int_equal(constraint_parse(NULL, &(constraint_t){0}, err, sizeof err), -EINVAL);
}

static void test_constraint_list_stops_at_first_bad_expression(void **state) {
    char *good[] = {"node.role==worker", "node.labels.zone==a"};
    constraint_list_t *list = NULL;
    assert_int_equal(constraint_list_parse(good, 2, &list, NULL, 0), 0);
    assert_int_equal(list->count, 2);

    test_node_t n;
    node_init(&n, "n1", "h", SHOAL__NODE_SPEC__ROLE__WORKER);
    assert_false(constraint_list_match(list, &n.node)); /* zone missing */
    node_label(&n, "zone", "a");
    assert_true(constraint_list_match(list, &n.node));
    n.node.role = SHOAL__NODE_SPEC__ROLE__MANAGER;
    assert_false(constraint_list_match(list, &n.node));
    constraint_list_destroy(&list);
    assert_null(list);

    char *bad[] = {"node.role==worker", "zone==a", "node.id=x"};
    char err[256] = "";
    assert_int_equal(constraint_list_parse(bad, 3, &list, err, sizeof err), -EINVAL);
    assert_null(list);
    assert_non_null(strstr(err, "\"zone==a\""));
    constraint_list_destroy(&list); /* NULL-tolerant */
}

static void test_constraint_platform_arch_matches_docker_and_kernel_names(void **state) {
    test_node_t n;
    node_init(&n, "n1", "host", SHOAL__NODE_SPEC__ROLE__WORKER);
    n.platform.architecture = "x86_64"; /* what Engine /info reports */
    assert_true(matches("node.platform.arch==amd64", &n.node));
    assert_true(matches("node.platform.arch==x86_64", &n.node));
    assert_false(matches("node.platform.arch!=amd64", &n.node));
    assert_false(matches("node.platform.arch==arm64", &n.node));
    n.platform.architecture = "aarch64";
    assert_true(matches("node.platform.arch==arm64", &n.node));
    assert_true(matches("node.platform.os==linux", &n.node));
    assert_string_equal(constraint_normal_arch("x86_64"), "amd64");
    assert_string_equal(constraint_normal_arch("riscv64"), "riscv64");
    assert_string_equal(constraint_normal_arch(NULL), "");
}

static void test_constraint_key_parse_reads_spread_descriptors(void **state) {
    enum constraint_key key;
    const char *label = NULL;
    assert_int_equal(constraint_key_parse("node.labels.zone", &key, &label), 0);
    assert_int_equal(key, CONSTRAINT_KEY_NODE_LABEL);
    assert_string_equal(label, "zone");
    assert_int_equal(constraint_key_parse("engine.labels.disk", &key, &label), 0);
    assert_int_equal(key, CONSTRAINT_KEY_ENGINE_LABEL);
    assert_string_equal(label, "disk");
    assert_int_equal(constraint_key_parse("NODE.HOSTNAME", &key, &label), 0);
    assert_int_equal(key, CONSTRAINT_KEY_HOSTNAME);
    assert_null(label);
    assert_int_equal(constraint_key_parse("node.labels.", &key, &label), -EINVAL);
    assert_int_equal(constraint_key_parse("node.label.zone", &key, &label), -EINVAL);
    assert_int_equal(constraint_key_parse("node.labels.a b", &key, &label), -EINVAL);
    assert_int_equal(constraint_key_parse(NULL, &key, &label), -EINVAL);

    test_node_t n;
    node_init(&n, "n1", "host", SHOAL__NODE_SPEC__ROLE__MANAGER);
    node_label(&n, "zone", "eu-1");
    engine_label(&n, "disk", "ssd");
    assert_string_equal(constraint_node_value(&n.node, CONSTRAINT_KEY_NODE_LABEL, "zone"), "eu-1");
    assert_string_equal(constraint_node_value(&n.node, CONSTRAINT_KEY_NODE_LABEL, "rack"), "");
    assert_string_equal(constraint_node_value(&n.node, CONSTRAINT_KEY_ENGINE_LABEL, "disk"), "ssd");
    assert_string_equal(constraint_node_value(&n.node, CONSTRAINT_KEY_ROLE, NULL), "manager");
    assert_string_equal(constraint_node_value(NULL, CONSTRAINT_KEY_HOSTNAME, NULL), "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constraint_parses_each_key_form),
        cmocka_unit_test(test_constraint_allows_spaces_around_operator),
        cmocka_unit_test(test_constraint_eq_and_ne_on_hostname_and_role),
        cmocka_unit_test(test_constraint_label_values_compare_exactly),
        cmocka_unit_test(test_constraint_absent_label_fails_eq_and_matches_ne),
        cmocka_unit_test(test_constraint_errors_name_the_expression),
        cmocka_unit_test(test_constraint_list_stops_at_first_bad_expression),
        cmocka_unit_test(test_constraint_platform_arch_matches_docker_and_kernel_names),
        cmocka_unit_test(test_constraint_key_parse_reads_spread_descriptors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
