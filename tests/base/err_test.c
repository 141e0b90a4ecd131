/* err_test.c — the error table covers every code, and br_fail/br_errbuf_set fill the reason. */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "barrel/err.h"

Test(err, every_code_has_a_nonempty_text_and_name)
{
    for (int i = 0; i < BR_ERR_COUNT; i++) {
        const char *text = br_strerror((br_err)i);
        const char *name = br_errname((br_err)i);
        cr_assert(text != NULL && text[0] != '\0', "code %d has no text", i);
        cr_assert(name != NULL && name[0] != '\0', "code %d has no name", i);
        cr_expect(strcmp(text, "unknown error") != 0, "code %d is missing from the table", i);
        cr_expect(strcmp(name, "eunknown") != 0, "code %d is missing from the table", i);
    }
}

Test(err, names_and_texts_are_distinct)
{
    for (int i = 0; i < BR_ERR_COUNT; i++) {
        for (int j = i + 1; j < BR_ERR_COUNT; j++) {
            cr_expect(strcmp(br_errname((br_err)i), br_errname((br_err)j)) != 0,
                      "codes %d and %d share the name %s", i, j, br_errname((br_err)i));
            cr_expect(strcmp(br_strerror((br_err)i), br_strerror((br_err)j)) != 0,
                      "codes %d and %d share the text %s", i, j, br_strerror((br_err)i));
        }
    }
}

Test(err, names_are_lowercase_identifiers)
{
    for (int i = 0; i < BR_ERR_COUNT; i++) {
        for (const char *p = br_errname((br_err)i); *p; p++) {
            int ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
            cr_expect(ok, "name of code %d has %c", i, *p);
        }
    }
}

Test(err, values_are_stable)
{
    /* Codes may be logged or persisted: these must never be renumbered. */
    cr_assert(eq(int, BR_OK, 0));
    cr_assert(eq(int, BR_ENOMEM, 1));
    cr_assert(eq(int, BR_EINVAL, 2));
    cr_assert(eq(int, BR_ENOTFOUND, 3));
    cr_assert(eq(int, BR_ETOOBIG, 11));
    cr_assert(eq(int, BR_EBADNAME, 17));
    cr_assert(eq(int, BR_EWOULDBLOCK, 18));
    cr_assert(eq(str, (char *)br_errname(BR_OK), "ok"));
    cr_assert(eq(str, (char *)br_errname(BR_ENOTFOUND), "enotfound"));
    cr_assert(eq(str, (char *)br_strerror(BR_ENOTFOUND), "not found"));
}

Test(err, unknown_codes_are_handled)
{
    const int bad[] = {BR_ERR_COUNT, BR_ERR_COUNT + 1, 1000, -1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert(eq(str, (char *)br_strerror((br_err)bad[i]), "unknown error"));
        cr_assert(eq(str, (char *)br_errname((br_err)bad[i]), "eunknown"));
    }
}

Test(err, fail_sets_the_reason_and_returns_the_code)
{
    struct br_errbuf eb = {{0}};
    br_err e = br_fail(&eb, BR_EINVAL, "bad field %s=%d", "limit", -3);
    cr_assert(eq(int, e, BR_EINVAL));
    cr_assert(eq(str, eb.msg, "bad field limit=-3"));

    e = br_fail(&eb, BR_ENOTFOUND, "missing");
    cr_assert(eq(int, e, BR_ENOTFOUND));
    cr_assert(eq(str, eb.msg, "missing"), "a second reason replaces the first");
}

Test(err, fail_with_null_errbuf_returns_the_code)
{
    cr_assert(eq(int, br_fail(NULL, BR_ECONFLICT, "ignored %d", 1), BR_ECONFLICT));
    cr_assert(eq(int, br_fail(NULL, BR_OK, "ok"), BR_OK));
}

Test(err, errbuf_set_writes_and_ignores_null)
{
    struct br_errbuf eb = {{0}};
    br_errbuf_set(&eb, "%s/%u", "db", 7u);
    cr_assert(eq(str, eb.msg, "db/7"));
    br_errbuf_set(NULL, "nothing %d", 1); /* must not crash */
}

Test(err, long_reasons_are_cut_to_fit_and_terminated)
{
    char longmsg[3 * BR_ERRBUF_SIZE];
    memset(longmsg, 'x', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';

    struct br_errbuf eb;
    memset(&eb, 'Z', sizeof eb);
    br_err e = br_fail(&eb, BR_ETOOBIG, "%s", longmsg);
    cr_assert(eq(int, e, BR_ETOOBIG));
    cr_assert(eq(sz, strlen(eb.msg), BR_ERRBUF_SIZE - 1));
    cr_assert(eq(chr, eb.msg[BR_ERRBUF_SIZE - 1], '\0'));
    cr_assert(eq(int, strncmp(eb.msg, longmsg, BR_ERRBUF_SIZE - 1), 0));

    memset(&eb, 'Z', sizeof eb);
    br_errbuf_set(&eb, "%s-%s", longmsg, longmsg);
    cr_assert(eq(sz, strlen(eb.msg), BR_ERRBUF_SIZE - 1));
}

Test(err, reason_of_exactly_max_length_fits)
{
    char msg[BR_ERRBUF_SIZE];
    memset(msg, 'y', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    struct br_errbuf eb;
    br_errbuf_set(&eb, "%s", msg);
    cr_assert(eq(str, eb.msg, msg));
}
