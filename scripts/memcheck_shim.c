/*
 * Preloaded after the AddressSanitizer runtime by scripts/memcheck.sh (never part of the
 * extension): two fixes that let the sanitizer runtimes live inside an uninstrumented postgres.
 *
 * 1. swift_demangle. With libasan in LD_PRELOAD, the runtime initializes lazily, on the first
 *    malloc. postgres links libldap -> libgnutls -> libp11-kit, whose constructor runs before
 *    libasan's and calls newlocale(), which mallocs while holding glibc's setlocale write
 *    lock. ASan's initialization then looks up the optional symbol `swift_demangle` and calls
 *    dlerror() to clear the miss; dlerror() translates its message through dcgettext(), which
 *    read-locks the same lock from the same thread: the read lock fails (EDEADLK), the
 *    matching unlock releases newlocale's write lock, and the lock's reader count underflows.
 *    Every later setlocale/bindtextdomain/freelocale in that process hangs (seen: `postgres
 *    -V` run by pg_ctl, psql at exit). Defining the symbol makes the lookup succeed, so
 *    dlerror() has nothing to translate and takes no lock. The runtime calls it only for
 *    Swift-mangled names ("_T..."); "not demangled" (NULL) is the right answer.
 *
 * 2. __ubsan_default_options. libubsan initializes lazily too, at its first report: in a
 *    backend, after PostgreSQL has overwritten the environment strings with the process title
 *    (the runtimes read /proc/self/environ), so UBSAN_OPTIONS is gone there: no suppressions,
 *    and its default log_path ("stderr") resets ASan's report path through libasan's exported
 *    setter. This library's constructor runs in the postmaster, where the environment is
 *    intact, and keeps a copy that every forked process inherits; libubsan asks for it through
 *    this hook before it parses the (missing) variable.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

char *swift_demangle(const char *name, size_t length, char *out, size_t *out_size, uint32_t flags);
const char *__ubsan_default_options(void);

static char ubsan_options[4096];

char *swift_demangle(const char *name, size_t length, char *out, size_t *out_size, uint32_t flags)
{
    (void) name;
    (void) length;
    (void) out;
    (void) out_size;
    (void) flags;
    return NULL;
}

/* Keeps UBSAN_OPTIONS while the environment is still intact (process start). */
__attribute__((constructor)) static void keep_ubsan_options(void)
{
    const char *options = getenv("UBSAN_OPTIONS");

    if (options != NULL && strlen(options) < sizeof(ubsan_options))
        memcpy(ubsan_options, options, strlen(options) + 1);
}

const char *__ubsan_default_options(void)
{
    return ubsan_options;
}
