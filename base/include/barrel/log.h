/* log.h — one line per event, with a level and a tag, key=value pairs in the message.
 *
 * br_log() checks the level before evaluating its arguments (it is a macro over
 * br_log_enabled()). The sink can be replaced so tests capture logs; the default sink writes
 * "2026-11-23T12:00:00.123Z LEVEL tag message" to stderr. The level and sink are the only
 * global mutable state here. */
#ifndef BARREL_LOG_H
#define BARREL_LOG_H

#include <stdbool.h>

#include "barrel/err.h"

enum br_log_level {
    BR_LOG_ERROR = 0,
    BR_LOG_WARN = 1,
    BR_LOG_INFO = 2,
    BR_LOG_DEBUG = 3,
    BR_LOG_TRACE = 4,
};

/* A sink receives one formatted line (no trailing newline). Thread: any (it must be). */
typedef void (*br_log_sink)(void *arg, enum br_log_level level, const char *tag, const char *line);

void br_log_set_level(enum br_log_level level);
enum br_log_level br_log_get_level(void);
/* Parse "error|warn|info|debug|trace"; BR_EINVAL for anything else. */
BR_NODISCARD br_err br_log_parse_level(const char *s, enum br_log_level *out);
/* Replace the sink (NULL restores the default stderr sink). */
void br_log_set_sink(br_log_sink sink, void *arg);
const char *br_log_level_name(enum br_log_level level);

static inline bool br_log_enabled(enum br_log_level level)
{
    extern enum br_log_level br_log_level_current;
    return level <= br_log_level_current;
}

void br_log_write(enum br_log_level level, const char *tag, const char *fmt, ...) BR_PRINTF(3, 4);

#define br_log(level, tag, ...)                                                                    \
    do {                                                                                           \
        if (br_log_enabled(level))                                                                 \
            br_log_write(level, tag, __VA_ARGS__);                                                 \
    } while (0)

#endif
