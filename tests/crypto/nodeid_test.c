/* nodeid_test.c — node id text form: round trip, case and dashes, check characters, rejects. */
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "barrel/nodeid.h"

static struct br_node_id sample(uint8_t seed)
{
    uint8_t pk[32];
    for (int i = 0; i < 32; i++)
        pk[i] = (uint8_t)(seed * 31 + i);
    struct br_node_id id;
    br_nodeid_from_public_key(pk, &id);
    return id;
}

Test(nodeid, format_is_eight_groups_of_seven)
{
    struct br_node_id id = sample(1);
    char s[BR_NODE_ID_TEXT_LEN + 1];
    br_nodeid_format(&id, s);
    cr_assert_eq(strlen(s), 63);
    for (int i = 0; i < 63; i++) {
        if (i % 8 == 7)
            cr_assert_eq(s[i], '-', "dash expected at %d in %s", i, s);
        else
            cr_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", s[i]) != NULL);
    }
}

Test(nodeid, round_trips_for_many_keys)
{
    for (int k = 0; k < 200; k++) {
        struct br_node_id id = sample((uint8_t)k), back;
        char s[BR_NODE_ID_TEXT_LEN + 1];
        br_nodeid_format(&id, s);
        cr_assert_eq(br_nodeid_parse(s, strlen(s), &back, NULL), BR_OK, "%s", s);
        cr_assert(br_nodeid_equal(&id, &back));
    }
}

Test(nodeid, parse_ignores_case_and_dashes)
{
    struct br_node_id id = sample(7), back;
    char s[BR_NODE_ID_TEXT_LEN + 1], t[80];
    br_nodeid_format(&id, s);
    size_t n = 0;
    for (size_t i = 0; s[i]; i++)
        if (s[i] != '-')
            t[n++] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    cr_assert_eq(n, 56);
    cr_assert_eq(br_nodeid_parse(t, n, &back, NULL), BR_OK);
    cr_assert(br_nodeid_equal(&id, &back));
    cr_assert(br_nodeid_valid(s, strlen(s)));
}

Test(nodeid, short_form_is_first_eight_characters)
{
    struct br_node_id id = sample(3);
    char s[BR_NODE_ID_TEXT_LEN + 1], sh[BR_NODE_ID_SHORT_LEN + 1];
    br_nodeid_format(&id, s);
    br_nodeid_short(&id, sh);
    cr_assert_eq(strlen(sh), 8);
    cr_assert(memcmp(sh, s, 7) == 0 && sh[7] == s[8]);
}

Test(nodeid, every_single_character_change_is_rejected)
{
    struct br_node_id id = sample(9), back;
    char s[BR_NODE_ID_TEXT_LEN + 1];
    br_nodeid_format(&id, s);
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    for (size_t i = 0; i < 63; i++) {
        if (s[i] == '-')
            continue;
        for (size_t a = 0; a < 32; a++) {
            if (alpha[a] == s[i])
                continue;
            char t[BR_NODE_ID_TEXT_LEN + 1];
            memcpy(t, s, sizeof t);
            t[i] = alpha[a];
            cr_assert_neq(br_nodeid_parse(t, 63, &back, NULL), BR_OK, "accepted %s", t);
        }
    }
}

Test(nodeid, rejects_bad_length_characters_and_noncanonical)
{
    struct br_node_id id = sample(5), back;
    char s[BR_NODE_ID_TEXT_LEN + 1];
    struct br_errbuf eb;
    br_nodeid_format(&id, s);
    cr_assert_eq(br_nodeid_parse(s, 62, &back, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "characters") != NULL, "%s", eb.msg);
    char longer[70];
    memcpy(longer, s, 63);
    longer[63] = 'A';
    cr_assert_eq(br_nodeid_parse(longer, 64, &back, &eb), BR_EINVAL);
    char bad[BR_NODE_ID_TEXT_LEN + 1];
    memcpy(bad, s, sizeof bad);
    bad[10] = '1'; /* not in the base32 alphabet */
    cr_assert_eq(br_nodeid_parse(bad, 63, &back, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "bad character at offset 10") != NULL, "%s", eb.msg);
    cr_assert_eq(br_nodeid_parse("", 0, &back, NULL), BR_EINVAL);
    cr_assert_eq(br_nodeid_parse(NULL, 0, &back, NULL), BR_EINVAL);
    cr_assert_not(br_nodeid_valid("hello", 5));

    /* The last data digit carries one bit and four padding bits; setting a padding bit, with
     * the check digit fixed up to match, must still be refused as non-canonical. */
    char d[57];
    size_t n = 0;
    for (size_t i = 0; i < 63; i++)
        if (s[i] != '-')
            d[n++] = s[i];
    d[n] = 0;
    /* the last data digit is d[54] (chunk 4 = d[42..55), check at d[55]) */
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    int v = (int)(strchr(alpha, d[54]) - alpha);
    d[54] = alpha[v | 1];
    int found = 0;
    for (int c = 0; c < 32; c++) {
        d[55] = alpha[c];
        if (br_nodeid_parse(d, 56, &back, &eb) == BR_OK)
            found++;
        else if (strstr(eb.msg, "not canonical"))
            found += 100;
    }
    cr_assert_eq(found, 100, "exactly one check digit passes the Luhn test and is refused");
}

Test(nodeid, different_keys_give_different_ids)
{
    struct br_node_id a = sample(1), b = sample(2);
    cr_assert_not(br_nodeid_equal(&a, &b));
}
