/* Unit tests for lib/arena: alignment and zeroing, big allocations beside the head block, reset
 * keeping the first block, the string helpers, both array helpers, and protobuf-c unpacking into
 * the arena (and mixing unpacked and hand-built sub-messages in one tree). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "objects.pb-c.h"

static void test_arena_alloc_is_zeroed_and_aligned(void **state) {
    (void)state;
    arena_t *a = arena_new(256);
    assert_non_null(a);
    for (size_t size = 1; size < 200; size += 7) {
        unsigned char *p = arena_alloc(a, size);
        assert_int_equal((uintptr_t)p % 16, 0);
        for (size_t i = 0; i < size; i++)
            assert_int_equal(p[i], 0);
        memset(p, 0xAB, size); /* a later allocation must not see this */
    }
    assert_true(arena_used(a) >= 200 / 7 * 16);
    arena_destroy(&a);
    assert_null(a);
    arena_destroy(&a); /* NULL-tolerant */
}

static void test_arena_big_allocation_keeps_head_block_usable(void **state) {
    (void)state;
    arena_t *a = arena_new(1024);
    char *small1 = arena_alloc(a, 16);
    char *big = arena_alloc(a, 100000); /* far larger than a block */
    char *small2 = arena_alloc(a, 16);
    memset(big, 'x', 100000);
    /* The small ones still come from the head block, one after the other. */
    assert_ptr_equal(small2, small1 + 16);
    assert_int_equal(small1[0], 0);
    assert_int_equal(small2[0], 0);
    arena_destroy(&a);
}

static void test_arena_reset_frees_everything_and_reuses_the_first_block(void **state) {
    (void)state;
    arena_t *a = arena_new(512);
    char *first = arena_alloc(a, 8);
    for (int i = 0; i < 100; i++)
        memset(arena_alloc(a, 200), 1, 200); /* several more blocks */
    assert_true(arena_used(a) >= 100 * 200);
    arena_reset(a);
    assert_int_equal(arena_used(a), 0);
    char *again = arena_alloc(a, 8);
    assert_ptr_equal(again, first);
    assert_int_equal(again[0], 0);
    arena_destroy(&a);
}

static void test_arena_strings(void **state) {
    (void)state;
    arena_t *a = arena_new(0);
    const char *src = "service web";
    char *d = arena_strdup(a, src);
    assert_ptr_not_equal(d, src);
    assert_string_equal(d, src);
    assert_string_equal(arena_strndup(a, src, 7), "service");
    assert_string_equal(arena_printf(a, "%s.%d", "web", 3), "web.3");
    char *long_text = arena_printf(a, "%0*d", 70000, 7); /* longer than a block */
    assert_int_equal(strlen(long_text), 70000);
    assert_int_equal(long_text[69999], '7');
    const unsigned char bytes[] = {0, 1, 2, 0};
    unsigned char *m = arena_memdup(a, bytes, sizeof bytes);
    assert_memory_equal(m, bytes, sizeof bytes);
    assert_non_null(arena_memdup(a, NULL, 0));
    arena_destroy(&a);
}

static void test_arena_vec_push_grows_and_keeps_order(void **state) {
    (void)state;
    arena_t *a = arena_new(0);
    arena_vec_t v = {0};
    int values[1000];
    for (int i = 0; i < 1000; i++) {
        values[i] = i;
        arena_vec_push(a, &v, &values[i]);
    }
    assert_int_equal(v.n, 1000);
    assert_true(v.cap >= 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(*(int *)v.items[i], i);
    arena_destroy(&a);
}

static void test_arena_push_appends_to_a_protobuf_repeated_field(void **state) {
    (void)state;
    arena_t *a = arena_new(0);
    /* A decoded message has exactly n slots; pushing must not write past them. */
    Shoal__ContainerSpec in = SHOAL__CONTAINER_SPEC__INIT;
    char *env[] = {"A=1", "B=2", "C=3"};
    in.image = "busybox";
    in.env = env;
    in.n_env = 3;
    size_t len = protobuf_c_message_get_packed_size(&in.base);
    uint8_t *buf = arena_alloc(a, len);
    protobuf_c_message_pack(&in.base, buf);
    Shoal__ContainerSpec *c = (Shoal__ContainerSpec *)protobuf_c_message_unpack(
        &shoal__container_spec__descriptor, arena_allocator(a), len, buf);
    assert_non_null(c);
    assert_int_equal(c->n_env, 3);
    ARENA_PUSH(a, &c->env, &c->n_env, arena_strdup(a, "D=4"));
    ARENA_PUSH(a, &c->env, &c->n_env, "E=5");
    assert_int_equal(c->n_env, 5);
    assert_string_equal(c->env[0], "A=1");
    assert_string_equal(c->env[2], "C=3");
    assert_string_equal(c->env[3], "D=4");
    assert_string_equal(c->env[4], "E=5");
    /* A hand-built sub-message in an unpacked tree packs like any other. */
    c->healthcheck = arena_alloc(a, sizeof *c->healthcheck);
    shoal__health_config__init(c->healthcheck);
    ARENA_PUSH(a, &c->healthcheck->test, &c->healthcheck->n_test, "NONE");
    len = protobuf_c_message_get_packed_size(&c->base);
    buf = arena_alloc(a, len);
    protobuf_c_message_pack(&c->base, buf);
    Shoal__ContainerSpec *back = (Shoal__ContainerSpec *)protobuf_c_message_unpack(
        &shoal__container_spec__descriptor, arena_allocator(a), len, buf);
    assert_non_null(back);
    assert_int_equal(back->n_env, 5);
    assert_string_equal(back->healthcheck->test[0], "NONE");
    arena_destroy(&a); /* frees both trees: nothing was malloc'd on its own */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alloc_is_zeroed_and_aligned),
        cmocka_unit_test(test_arena_big_allocation_keeps_head_block_usable),
        cmocka_unit_test(test_arena_reset_frees_everything_and_reuses_the_first_block),
        cmocka_unit_test(test_arena_strings),
        cmocka_unit_test(test_arena_vec_push_grows_and_keeps_order),
        cmocka_unit_test(test_arena_push_appends_to_a_protobuf_repeated_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
