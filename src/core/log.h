/*
 * log.h - leveled logging to stderr, per subsystem.
 *
 * Every message names the subsystem ("c2s", "mod_register") and, where it
 * helps, the activity ("while routing presence").  Format strings are
 * literals.  The level is process wide and can change on SIGHUP.
 */
#ifndef PL_LOG_H
#define PL_LOG_H

enum pl_log_level {
    PL_LOG_ERROR = 0,
    PL_LOG_WARN = 1,
    PL_LOG_INFO = 2,
    PL_LOG_DEBUG = 3,
};

void pl_log_set_level(enum pl_log_level level);
/* Lines of process <index> of server.processes start their subsystem with
 * "[<index>] " (several processes share one stderr); -1: none. */
void pl_log_set_process(int index);
enum pl_log_level pl_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int pl_log_level_parse(const char *name);

void pl_log(enum pl_log_level level, const char *subsystem, const char *fmt,
            ...) __attribute__((format(printf, 3, 4)));

#define pl_log_error(sub, ...) pl_log(PL_LOG_ERROR, sub, __VA_ARGS__)
#define pl_log_warn(sub, ...) pl_log(PL_LOG_WARN, sub, __VA_ARGS__)
#define pl_log_info(sub, ...) pl_log(PL_LOG_INFO, sub, __VA_ARGS__)
#define pl_log_debug(sub, ...)                                                 \
    do {                                                                       \
        if (pl_log_get_level() >= PL_LOG_DEBUG)                                \
            pl_log(PL_LOG_DEBUG, sub, __VA_ARGS__);                            \
    } while (0)

/* Broken invariant: log and abort (Redis serverAssert). */
#define pl_assert(cond)                                                        \
    do {                                                                       \
        if (!(cond))                                                           \
            pl__assert_fail(#cond, __FILE__, __LINE__);                        \
    } while (0)
void pl__assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

#endif
