/* test_buf.c - growable buffers and XML escaping. */
#include "../../src/core/buf.h"
#include "../../src/core/error.h"
#include "unit.h"

void test_buf_escape(void)
{
    static const struct {
        const char *in;
        int attr;
        const char *out;
    } cases[] = {
        {"plain", 0, "plain"},
        {"a<b>&c", 0, "a&lt;b&gt;&amp;c"},
        {"it's \"q\"", 0, "it's \"q\""},
        {"it's \"q\"", 1, "it&apos;s &quot;q&quot;"},
        {"]]>", 0, "]]&gt;"},
        {"", 1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_buf b = {0};
        pl_buf_append_escaped(&b, cases[i].in, strlen(cases[i].in),
                              cases[i].attr);
        CHECK_STR(pl_buf_cstr(&b), cases[i].out);
        pl_buf_reset(&b);
    }
    struct pl_buf b = {0};
    for (int i = 0; i < 1000; i++)
        pl_buf_printf(&b, "%d,", i);
    pl_buf_consume(&b, 4);
    CHECK(strncmp(pl_buf_cstr(&b), "2,3,", 4) == 0);
    pl_buf_reset(&b);
    CHECK(b.data == NULL && b.len == 0);
}

void test_error_conditions(void)
{
    const char *cond, *type;
    pl_error_condition(PL_EITEM_NOT_FOUND, &cond, &type);
    CHECK_STR(cond, "item-not-found");
    CHECK_STR(type, "cancel");
    pl_error_condition(PL_ENOT_AUTHORIZED, &cond, &type);
    CHECK_STR(cond, "not-authorized");
    CHECK_STR(type, "auth");
    pl_error_condition(12345, &cond, &type);
    CHECK_STR(cond, "internal-server-error");
}
