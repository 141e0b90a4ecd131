/* txt_test.c — the TXT record parser and encoder of discovery/ (pure functions, no Avahi). */
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/discovery.h"

#define ID "ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX"
#define MESH "0123456789abcdef"

/* Parse n NUL-terminated strings as TXT items. */
static br_err parse(const char *const *strs, size_t n, struct br_discovery_txt *out,
                    struct br_errbuf *eb)
{
    const uint8_t *items[64];
    size_t lens[64];
    cr_assert(n <= 64);
    for (size_t i = 0; i < n; i++) {
        items[i] = (const uint8_t *)strs[i];
        lens[i] = strlen(strs[i]);
    }
    return br_discovery_txt_parse(items, lens, n, out, eb);
}

#define PARSE(out, eb, ...)                                                                        \
    parse((const char *const[]){__VA_ARGS__},                                                      \
          sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), out, eb)

/* Expect a refusal whose reason contains `why`; *out must stay untouched. */
#define REJECTS(why, ...)                                                                          \
    do {                                                                                           \
        struct br_discovery_txt t_;                                                                \
        struct br_errbuf eb_;                                                                      \
        memset(&t_, 0x5a, sizeof t_);                                                              \
        cr_assert_eq(PARSE(&t_, &eb_, __VA_ARGS__), BR_EPROTO);                                    \
        cr_assert(strstr(eb_.msg, why), "reason '%s' lacks '%s'", eb_.msg, why);                   \
        cr_assert_eq(((unsigned char *)&t_)[0], 0x5a, "out written on error");                     \
    } while (0)

Test(txt, parses_a_full_record)
{
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(PARSE(&t, &eb, "id=" ID, "v=1", "mesh=" MESH, "port=7070"), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(t.id, ID);
    cr_assert_eq(t.version, 1);
    cr_assert_str_eq(t.mesh, MESH);
    cr_assert_eq(t.port, 7070);
}

Test(txt, mesh_and_port_are_optional_and_empty_mesh_means_none)
{
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(PARSE(&t, &eb, "v=3", "id=" ID), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(t.mesh, "");
    cr_assert_eq(t.port, 0);
    cr_assert_eq(t.version, 3);
    cr_assert_eq(PARSE(&t, &eb, "id=" ID, "v=1", "mesh="), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(t.mesh, "");
}

Test(txt, keys_ignore_case)
{
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(PARSE(&t, &eb, "ID=" ID, "V=2", "Mesh=" MESH, "PORT=1"), BR_OK, "%s", eb.msg);
    cr_assert_eq(t.version, 2);
    cr_assert_eq(t.port, 1);
    REJECTS("duplicate id", "id=" ID, "v=1", "Id=" ID);
}

Test(txt, ignores_unknown_keys_empty_items_and_items_without_key)
{
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(PARSE(&t, &eb, "txtvers=1", "", "id=" ID, "=oops", "flag", "v=1", "ids=x", "vv=9",
                       "future=\x01\xff"),
                 BR_OK, "%s", eb.msg);
    cr_assert_str_eq(t.id, ID);
    cr_assert_eq(t.version, 1);
}

Test(txt, rejects_missing_or_duplicate_id)
{
    REJECTS("missing id", "v=1");
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(br_discovery_txt_parse(NULL, NULL, 0, &t, &eb), BR_EPROTO);
    cr_assert_str_eq(eb.msg, "missing id");
    REJECTS("duplicate id", "id=" ID, "v=1", "id=" ID);
    REJECTS("id has no value", "id", "v=1");
}

Test(txt, rejects_ids_of_the_wrong_shape)
{
    REJECTS("id is 62 characters",
            "id="
            "BCDEFG-HIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX",
            "v=1");
    REJECTS("id is 64 characters", "id=" ID "A", "v=1");
    REJECTS("id is 0 characters", "id=", "v=1");
    /* lowercase, and digits outside 2-7 */
    REJECTS("bad character at position 0",
            "id=aBCDEFG-HIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX", "v=1");
    REJECTS("bad character at position 29",
            "id=ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ13-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX", "v=1");
    REJECTS("bad character at position 35",
            "id=ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23-4568ABC-DEFGHIJ-KLMNOPQ-RSTUVWX", "v=1");
    /* dashes in the wrong places, or none */
    REJECTS("no dash at position 7",
            "id=ABCDEFGAHIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX", "v=1");
    REJECTS("bad character at position 6",
            "id=ABCDEF-GHIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX", "v=1");
}

Test(txt, rejects_bad_versions)
{
    REJECTS("missing v", "id=" ID);
    REJECTS("duplicate v", "id=" ID, "v=1", "v=1");
    REJECTS("v has no value", "id=" ID, "v");
    REJECTS("v is empty", "id=" ID, "v=");
    REJECTS("v is zero", "id=" ID, "v=0");
    REJECTS("v has a leading zero", "id=" ID, "v=01");
    REJECTS("v is not a decimal number", "id=" ID, "v=1a");
    REJECTS("v is not a decimal number", "id=" ID, "v=-1");
    REJECTS("v is not a decimal number", "id=" ID, "v=+1");
    REJECTS("v is not a decimal number", "id=" ID, "v= 1");
    REJECTS("v is not a decimal number", "id=" ID, "v=0x10");
    REJECTS("v is too large", "id=" ID, "v=65536");
    REJECTS("v is too large", "id=" ID, "v=99999999999999999999999999999");
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(PARSE(&t, &eb, "id=" ID, "v=65535"), BR_OK, "%s", eb.msg);
    cr_assert_eq(t.version, 65535);
}

Test(txt, rejects_a_mesh_that_is_not_empty_or_16_lowercase_hex_digits)
{
    const char *why = "mesh is neither empty nor 16 lowercase hex digits";
    REJECTS(why, "id=" ID, "v=1", "mesh=0123456789ABCDEF");
    REJECTS(why, "id=" ID, "v=1", "mesh=0123456789abcde");
    REJECTS(why, "id=" ID, "v=1", "mesh=0123456789abcdef0");
    REJECTS(why, "id=" ID, "v=1", "mesh=0123456789abcdeg");
    REJECTS(why, "id=" ID, "v=1", "mesh= 123456789abcdef");
    REJECTS("mesh has no value", "id=" ID, "v=1", "mesh");
    REJECTS("duplicate mesh", "id=" ID, "v=1", "mesh=", "mesh=" MESH);
}

Test(txt, rejects_a_port_outside_1_to_65535)
{
    REJECTS("port is zero", "id=" ID, "v=1", "port=0");
    REJECTS("port is too large", "id=" ID, "v=1", "port=65536");
    REJECTS("port is not a decimal number", "id=" ID, "v=1", "port=http");
    REJECTS("port is not a decimal number", "id=" ID, "v=1", "port=-1");
    REJECTS("port is empty", "id=" ID, "v=1", "port=");
    REJECTS("port has a leading zero", "id=" ID, "v=1", "port=080");
    REJECTS("duplicate port", "id=" ID, "v=1", "port=1", "port=2");
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(PARSE(&t, &eb, "id=" ID, "v=1", "port=65535"), BR_OK, "%s", eb.msg);
    cr_assert_eq(t.port, 65535);
}

Test(txt, rejects_items_over_255_bytes)
{
    char big[300];
    struct br_discovery_txt t;
    struct br_errbuf eb;
    memset(big, 'a', sizeof big);
    memcpy(big, "x=", 2);
    big[255] = '\0';
    cr_assert_eq(PARSE(&t, &eb, "id=" ID, "v=1", big), BR_OK, "255 bytes are fine: %s", eb.msg);
    big[255] = 'a';
    big[256] = '\0';
    REJECTS("TXT item 2 is 256 bytes", "id=" ID, "v=1", big);
}

Test(txt, rejects_nul_bytes_anywhere)
{
    static const char a[] = "id=" ID, b[] = "v=1", c[] = "x=a\0b", d[] = "v=1\0";
    const uint8_t *items[] = {(const uint8_t *)a, (const uint8_t *)b, (const uint8_t *)c};
    size_t lens[] = {sizeof a - 1, sizeof b - 1, sizeof c - 1};
    struct br_discovery_txt t;
    struct br_errbuf eb;
    cr_assert_eq(br_discovery_txt_parse(items, lens, 3, &t, &eb), BR_EPROTO);
    cr_assert(strstr(eb.msg, "TXT item 2 holds a NUL byte"), "%s", eb.msg);
    items[1] = (const uint8_t *)d;
    lens[1] = sizeof d - 1;
    cr_assert_eq(br_discovery_txt_parse(items, lens, 2, &t, &eb), BR_EPROTO);
    cr_assert(strstr(eb.msg, "TXT item 1 holds a NUL byte"), "%s", eb.msg);
}

Test(txt, rejects_more_than_32_items)
{
    const uint8_t *items[33];
    size_t lens[33];
    struct br_discovery_txt t;
    struct br_errbuf eb;
    static const char id[] = "id=" ID, v[] = "v=1", other[] = "other=1";
    for (size_t i = 0; i < 33; i++) {
        const char *s = i == 0 ? id : i == 1 ? v : other;
        items[i] = (const uint8_t *)s;
        lens[i] = strlen(s);
    }
    cr_assert_eq(br_discovery_txt_parse(items, lens, 32, &t, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(br_discovery_txt_parse(items, lens, 33, &t, &eb), BR_EPROTO);
    cr_assert(strstr(eb.msg, "33 TXT items (at most 32)"), "%s", eb.msg);
}

Test(txt, encode_parses_back)
{
    struct br_discovery_txt in = {.id = ID, .version = 7, .mesh = MESH, .port = 443}, out;
    struct br_discovery_txt_items enc;
    struct br_errbuf eb;
    cr_assert_eq(br_discovery_txt_encode(&in, &enc, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(enc.n, 4);
    cr_assert_str_eq(enc.item[0], "id=" ID);
    cr_assert_str_eq(enc.item[1], "v=7");
    cr_assert_str_eq(enc.item[2], "mesh=" MESH);
    cr_assert_str_eq(enc.item[3], "port=443");
    const uint8_t *items[4];
    for (size_t i = 0; i < enc.n; i++) {
        items[i] = (const uint8_t *)enc.item[i];
        cr_assert_eq(enc.len[i], strlen(enc.item[i]));
    }
    cr_assert_eq(br_discovery_txt_parse(items, enc.len, enc.n, &out, &eb), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(out.id, in.id);
    cr_assert_eq(out.version, in.version);
    cr_assert_str_eq(out.mesh, in.mesh);
    cr_assert_eq(out.port, in.port);
}

Test(txt, encode_leaves_out_port_zero_and_keeps_an_empty_mesh)
{
    struct br_discovery_txt in = {.id = ID, .version = 1};
    struct br_discovery_txt_items enc;
    struct br_errbuf eb;
    cr_assert_eq(br_discovery_txt_encode(&in, &enc, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(enc.n, 3);
    cr_assert_str_eq(enc.item[2], "mesh=");
}

Test(txt, encode_refuses_what_would_not_parse)
{
    struct br_discovery_txt_items enc;
    struct br_errbuf eb;
    memset(&enc, 0x5a, sizeof enc);
    struct br_discovery_txt bad_id = {.id = "NOT-AN-ID", .version = 1};
    cr_assert_eq(br_discovery_txt_encode(&bad_id, &enc, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "id is 9 characters"), "%s", eb.msg);
    struct br_discovery_txt bad_v = {.id = ID, .version = 0};
    cr_assert_eq(br_discovery_txt_encode(&bad_v, &enc, &eb), BR_EINVAL);
    bad_v.version = 65536;
    cr_assert_eq(br_discovery_txt_encode(&bad_v, &enc, &eb), BR_EINVAL);
    struct br_discovery_txt bad_mesh = {.id = ID, .version = 1, .mesh = "ABCDEF0123456789"};
    cr_assert_eq(br_discovery_txt_encode(&bad_mesh, &enc, &eb), BR_EINVAL);
    cr_assert_eq(enc.n, (size_t)0x5a5a5a5a5a5a5a5aull, "out written on error");
}
