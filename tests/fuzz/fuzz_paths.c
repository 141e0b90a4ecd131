/* fuzz_paths.c — libFuzzer harness for document paths and MQTT patterns (paths.h).
 *
 * The input is read twice. First as a document body: br_paths_foreach must accept exactly the
 * bodies br_cbor_doc_validate accepts (maps of JSON types at most 64 deep), report only sane
 * paths (string values cut to at most 100 bytes on a character boundary, no pair twice) whose
 * topics render, and br_paths_topics must then give a strictly sorted list no longer than the
 * path count. Second as text: the bytes after the last '\n' are a topic and the lines before
 * it up to 16 patterns; br_pattern_match on each valid pattern and a trie holding them all must
 * report the same matches, and removing every pattern must empty the trie. Any broken property
 * aborts, which the fuzzer reports as a crash. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/cbor.h"
#include "barrel/paths.h"

#define MAX_PATTERNS 16

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Whole UTF-8 characters only (the reader validated the input; the cut must not split). */
static bool utf8_whole(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 0 : c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 9;
        if (k == 9 || n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++)
            if (((unsigned char)s[i + j] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

struct walk {
    size_t n;
    br_buf topic;
};

static int on_path(void *arg, const struct br_path_value *pv)
{
    struct walk *w = arg;
    check(pv->keys != NULL);
    check(pv->type <= BR_PV_STRING);
    if (pv->type == BR_PV_STRING) {
        check(pv->s_len <= BR_PATH_STRING_CUT);
        check(pv->s_len == 0 || pv->s != NULL);
        check(utf8_whole(pv->s, pv->s_len));
    }
    br_buf_reset(&w->topic);
    check(br_path_topic(pv, &w->topic) == BR_OK);
    check(w->topic.len > pv->keys_len);
    check(memcmp(w->topic.data, pv->keys, pv->keys_len) == 0);
    check(w->topic.data[pv->keys_len] == '/');
    w->n++;
    return 0;
}

static void fuzz_body(const uint8_t *data, size_t size)
{
    struct walk w = {.n = 0};
    struct br_errbuf eb;
    br_buf_init(&w.topic, 0);
    br_err e = br_paths_foreach(data, size, on_path, &w);
    check(e == BR_OK || e == BR_EPROTO);
    check((e == BR_OK) == (br_cbor_doc_validate(data, size, BR_PATH_MAX_DEPTH, &eb) == BR_OK));
    if (e == BR_OK) {
        char **v = NULL;
        size_t n = 0;
        check(br_paths_topics(data, size, &v, &n) == BR_OK);
        check(n <= w.n);
        check((n == 0) == (v == NULL));
        for (size_t i = 1; i < n; i++)
            check(strcmp(v[i - 1], v[i]) < 0);
        br_free(v);
    }
    br_buf_fini(&w.topic);
}

struct tally {
    const int *base;
    unsigned *got;
};

static void on_match(void *arg, void *value)
{
    struct tally *t = arg;
    t->got[(const int *)value - t->base]++;
}

static void fuzz_patterns(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = NULL; /* the last newline */
    for (size_t i = size; i-- > 0 && !nl;)
        if (s[i] == '\n')
            nl = s + i;
    const char *topic = nl ? nl + 1 : s;
    size_t tlen = size - (size_t)(topic - s);
    const char *pat[MAX_PATTERNS];
    size_t plen[MAX_PATTERNS];
    bool valid[MAX_PATTERNS];
    int ids[MAX_PATTERNS];
    unsigned got[MAX_PATTERNS] = {0};
    size_t np = 0;
    const char *p = s;
    while (nl && p <= nl && np < MAX_PATTERNS) {
        const char *end = memchr(p, '\n', (size_t)(nl - p) + 1);
        pat[np] = p;
        plen[np] = (size_t)(end - p);
        np++;
        p = end + 1;
    }
    if (!nl) { /* no newline: the whole input is one pattern and the topic */
        pat[np] = s;
        plen[np] = size;
        np++;
    }

    br_pattern_trie *t = NULL;
    if (br_pattern_trie_new(&t) != BR_OK)
        return;
    size_t added = 0;
    for (size_t i = 0; i < np; i++) {
        struct br_errbuf eb;
        ids[i] = (int)i;
        valid[i] = br_pattern_check(pat[i], plen[i], &eb) == BR_OK;
        br_err e = br_pattern_trie_add(t, pat[i], plen[i], &ids[i]);
        check(valid[i] ? e == BR_OK : e == BR_EINVAL);
        added += valid[i];
    }
    check(br_pattern_trie_size(t) == added);
    struct tally ty = {ids, got};
    br_pattern_trie_match(t, topic, tlen, on_match, &ty);
    for (size_t i = 0; i < np; i++) {
        bool m = br_pattern_match(pat[i], plen[i], topic, tlen); /* even invalid: no crash */
        if (valid[i])
            check(got[i] == (m ? 1u : 0u));
        else
            check(got[i] == 0);
    }
    for (size_t i = np; i-- > 0;)
        if (valid[i])
            check(br_pattern_trie_remove(t, pat[i], plen[i], &ids[i]) == BR_OK);
    check(br_pattern_trie_size(t) == 0);
    memset(got, 0, sizeof got);
    br_pattern_trie_match(t, topic, tlen, on_match, &ty);
    for (size_t i = 0; i < np; i++)
        check(got[i] == 0);
    br_pattern_trie_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_body(data, size);
    fuzz_patterns(data, size);
    return 0;
}
